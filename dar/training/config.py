"""Every config of the training recipes; every default lives here (DESIGN §6, CONVENTIONS §3).

The shared parts (:class:`OptimConfig`, :class:`EMAConfig`, :class:`TrainConfig`) and one top-level dataclass per
recipe. YAML files in ``recipes/configs/`` map one-to-one onto these dataclasses
(:func:`dar.training.config_io.load_config`). The defaults are the paper's (reference §3 for the tokenizer,
§4.2 for the AR model) where the paper gives one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from dar.data.images import DataConfig
from llama_ar import SamplingOptions
from llama_ar.options import GENERATION_CONFIG_FIELDS

__all__ = [
    "ARModelConfig",
    "ARTrainingConfig",
    "DARTModelConfig",
    "DARTSampleConfig",
    "DARTTrainingConfig",
    "EMAConfig",
    "ExtractCodesConfig",
    "OptimConfig",
    "TokenizerLossConfig",
    "TokenizerModelConfig",
    "TokenizerTrainingConfig",
    "TrainConfig",
]

Schedule = Literal["constant", "cosine", "linear_decay"]


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (all step counts are optimizer steps).

    Attributes:
        lr: peak learning rate.
        betas: AdamW (β1, β2).
        weight_decay: decoupled weight decay, applied to tensors with ≥ 2 dims only (biases, norms: 0).
        eps: AdamW epsilon.
        warmup_steps: linear warm-up from lr/warmup_steps to lr over the first ``warmup_steps`` steps.
        schedule: after warm-up, ``constant``, ``cosine`` or ``linear_decay`` from lr to ``final_lr``.
        decay_start: first step of the decay (default: ``warmup_steps``).
        decay_end: step where ``final_lr`` is reached and kept (default: ``train.max_steps``).
        final_lr: learning rate at and after ``decay_end``.
        grad_clip: clip the global gradient norm to this value; None disables clipping.
        grad_accum: micro-batches accumulated per optimizer step.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    decay_start: int | None = None
    decay_end: int | None = None
    final_lr: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.final_lr < 0:
            raise ValueError(f"optim.lr must be > 0 and optim.final_lr >= 0, got {self.lr}, {self.final_lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("optim.weight_decay and optim.warmup_steps must be >= 0")
        if self.schedule not in ("constant", "cosine", "linear_decay"):
            raise ValueError(
                f"optim.schedule must be constant, cosine or linear_decay, got {self.schedule!r}"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if self.decay_start is not None and self.decay_end is not None and self.decay_end <= self.decay_start:
            raise ValueError(
                f"optim.decay_end ({self.decay_end}) must be > optim.decay_start ({self.decay_start})"
            )


@dataclass
class EMAConfig:
    """Exponential moving average of the parameters (buffers are taken from the live model at export)."""

    enabled: bool = True
    decay: float = 0.999
    # decay_n = min(decay, (1 + n) / (10 + n)) after n updates (diffusers' EMAModel default): without it the
    # random initial weights keep a weight of decay**steps (22% after 1,500 steps at 0.999) in short runs.
    warmup: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"ema.decay must lie in (0, 1), got {self.decay}")


@dataclass
class TrainConfig:
    """Loop length, checkpointing, logging and precision.

    Attributes:
        max_steps: optimizer steps of the run.
        save_every: ``accelerator.save_state`` every N steps (and at the last step).
        keep_last: number of checkpoints kept (older ones are deleted after a successful save).
        log_every: log (tensorboard + ``logs/train_log.jsonl``) every N steps.
        sample_every: write a sample grid every N steps (0: only at the end).
        num_samples: images in a sample grid.
        seed: seed of the model init, data order, augmentations and per-step noise.
        output_dir: run folder (``checkpoints/``, ``logs/``, ``samples/``, ``export/``).
        mixed_precision: ``auto`` (bf16 on a CUDA device with bf16 support, else fp32), ``no``, ``fp16``, ``bf16``.
        log_with: ``tensorboard`` (when installed) or ``none``.
        allow_tf32: enable TF32 matmuls on CUDA.
        resume: ``latest`` (newest complete checkpoint in ``output_dir``, if any) or a checkpoint directory.
        overwrite: start a fresh run in a used ``output_dir``, deleting its checkpoints, exports, logs and samples
            (without it, a fresh run refuses a non-empty ``output_dir``).
        fast_linear: on CPU, run fp32 linears and their input gradients through oneDNN
            (:mod:`dar.training.kernels`); a no-op elsewhere. Same results up to float summation order.
    """

    max_steps: int = 1000
    save_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    sample_every: int = 0
    num_samples: int = 8
    seed: int = 0
    output_dir: str = "runs/default"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    log_with: Literal["tensorboard", "none"] = "tensorboard"
    allow_tf32: bool = True
    resume: str | None = None
    overwrite: bool = False
    fast_linear: bool = True

    def __post_init__(self) -> None:
        if self.resume is not None and self.overwrite:
            raise ValueError(
                "train.resume and train.overwrite exclude each other: resume a run, or start over"
            )
        for name in ("max_steps", "save_every", "keep_last", "log_every", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ValueError(f"train.sample_every must be >= 0, got {self.sample_every}")


@dataclass
class TokenizerModelConfig:
    """Which tokenizer to train.

    Attributes:
        preset: a key of ``tokenizer.TOKENIZER_PRESETS`` (``tokenizer_v1``, ``demo``, ``tiny``).
        overrides: ``TokenizerConfig`` fields to change, e.g. ``{"num_decoder_layers": 8}``.
        init_from: a ``save_pretrained`` folder to start from (strict load) instead of a random init.
        split_codebook: with ``init_from``, grow its codebook this many times by splitting every code
            (``tokenizer.split_codebook``; 1 = keep it). The codes change meaning for the new codes only, but
            a prior trained on the old codes must be retrained on the new ones.
        split_spread: norm of the perturbation of the split copies (unit-norm codes).
        gradient_checkpointing: trade compute for memory (official: on).
    """

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    split_codebook: int = 1
    split_spread: float = 0.01
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.init_from and self.overrides:
            raise ValueError(
                f"model.overrides {sorted(self.overrides)} do not apply to model.init_from={self.init_from!r}: the "
                "export's own config sets the architecture. Drop the overrides, or train from the preset."
            )
        if (
            isinstance(self.split_codebook, bool)
            or not isinstance(self.split_codebook, int)
            or self.split_codebook < 1
        ):
            raise ValueError(f"model.split_codebook must be an int >= 1, got {self.split_codebook!r}")
        if self.split_codebook > 1 and not self.init_from:
            raise ValueError(
                "model.split_codebook splits the codebook of a trained tokenizer: set model.init_from, or set "
                "model.overrides.codebook_size to train a larger codebook from scratch"
            )
        if not self.split_spread >= 0:
            raise ValueError(f"model.split_spread must be >= 0, got {self.split_spread!r}")


@dataclass
class TokenizerLossConfig:
    """Optional loss terms on top of flow matching + VQ (official: LPIPS 0.5, REPA with DINOv2-B/14 0.5).

    Attributes:
        perceptual: ``lpips`` (torchmetrics' VGG LPIPS; needs torchvision and its weights) or ``none``.
        perceptual_weight: weight of the perceptual term.
        repa_model: a ``transformers`` DINOv2 checkpoint (hub id or folder) for REPA, or None to disable.
        repa_weight: weight of the REPA term.
    """

    perceptual: Literal["none", "lpips"] = "none"
    perceptual_weight: float = 0.5
    repa_model: str | None = None
    repa_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.perceptual_weight < 0 or self.repa_weight < 0:
            raise ValueError("loss weights must be >= 0")


@dataclass
class TokenizerTrainingConfig:
    """``recipes/train_tokenizer.py``: official AdamW 2e-4, β (0.9, 0.95), warm-up 500, clip 1.0, EMA 0.999."""

    data: DataConfig = field(default_factory=lambda: DataConfig(augment="random_crop"))
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=2e-4, betas=(0.9, 0.95), warmup_steps=500)
    )
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(enabled=True, decay=0.999))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/tokenizer"))


@dataclass
class ExtractCodesConfig:
    """``recipes/extract_codes.py``: encode a dataset once with a trained tokenizer.

    Attributes:
        data: the images (``augment`` is ignored: ``views`` decides the crops); ``batch_size`` is global.
        tokenizer_path: a ``DARTokenizer.save_pretrained`` folder (e.g. ``<run>/export/tokenizer``).
        output_dir: the code-set folder to write (must be empty unless ``overwrite``).
        views: ``center`` (ADM centre crop) or ``ten_crop`` (all ten crops, one picked per epoch in training).
        shard_size: rows per safetensors shard.
        overwrite: replace an existing code set in ``output_dir``.
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(augment="center_crop", batch_size=64))
    tokenizer_path: str | None = None
    output_dir: str = "runs/codes"
    views: Literal["center", "ten_crop"] = "center"
    shard_size: int = 50_000
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")


@dataclass
class ARModelConfig:
    """Which AR prior to train, and with which tokenizer.

    Attributes:
        preset: a key of ``llama_ar.AR_PRESETS`` (``dar-b``, ``dar-l``, ``dar-xl``, ``dar-xxl``, ``demo``, ``tiny``).
        overrides: ``ARConfig`` fields to change (also ``class_dropout`` / ``token_dropout``, official 0.1 each).
            ``num_tokens`` defaults to the tokenizer's.
        tokenizer_path: the tokenizer folder; needed for on-the-fly tokenization and sample grids, and checked
            against the fingerprint of pre-extracted codes (default: the path recorded with the codes).
        num_classes: number of classes when neither the codes nor the dataset name them.
        noise_scale: the decoder's starting-noise std in the sample grids and in the exported pipeline's tokenizer
            (``TokenizerConfig.noise_scale``; None keeps the tokenizer's own, 1 for the paper's).
        sampling_defaults: ``temperature`` / ``top_k`` / ``top_p`` written into the exported model's
            ``generation_config.json``, where ``DARPipeline`` and plain ``generate`` take their defaults from
            (empty: the neutral 1 / 0 / 1). The sample grids during training use ``sample``.
    """

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer_path: str | None = None
    num_classes: int | None = None
    noise_scale: float | None = None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sampling_defaults) - set(GENERATION_CONFIG_FIELDS))
        if unknown:
            raise ValueError(
                f"model.sampling_defaults can set {list(GENERATION_CONFIG_FIELDS)} (what generation_config.json "
                f"holds), got {unknown}; guidance is a call option (sample.cfg_scale, --cfg-scale)."
            )
        try:
            SamplingOptions(**self.sampling_defaults)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model.sampling_defaults: {error}") from None
        if self.noise_scale is not None:
            from tokenizer.config import check_noise_scale

            try:
                check_noise_scale(self.noise_scale)
            except ValueError as error:
                raise ValueError(f"model.{error}") from None


@dataclass
class ARTrainingConfig:
    """``recipes/train_llama_ar.py``: paper AdamW 4e-4, β (0.9, 0.95), wd 0.05 on ≥ 2-D tensors, clip 1.0, no EMA.

    ``data.source="codes"`` trains on ``extract_codes`` output in ``data.path``; any image source tokenizes on
    the fly with ``model.tokenizer_path`` (ten-crop, as the official recipe).
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(source="codes", augment="ten_crop"))
    model: ARModelConfig = field(default_factory=ARModelConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=4e-4, betas=(0.9, 0.95), weight_decay=0.05, grad_clip=1.0)
    )
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(enabled=False, decay=0.9999))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/ar"))
    sample: SamplingOptions = field(default_factory=SamplingOptions)


@dataclass
class DARTModelConfig:
    """Which DART model to train.

    Attributes:
        preset: a key of ``dart.DART_PRESETS`` (``DART-S/B/L/XL``, ``demo``, ``tiny``).
        overrides: ``DARTConfig`` fields to change, e.g. ``{"variant": "dart_fm"}`` or
            ``{"attention": "own_level"}`` (the Markovian ablation).
        init_from: a ``DARTModel.save_pretrained`` folder to start from (strict load) instead of a random init.
        vae: for a latent-space model (``space: latent``): a diffusers ``AutoencoderKL`` folder or Hub id.
    """

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    vae: str | None = None

    def __post_init__(self) -> None:
        if self.init_from and self.overrides:
            raise ValueError(
                f"model.overrides {sorted(self.overrides)} do not apply to model.init_from={self.init_from!r}: the "
                "export's own config sets the architecture. Drop the overrides, or train from the preset."
            )


@dataclass
class DARTSampleConfig:
    """Sampling settings of the periodic sample grids (see ``dart.DARTPipeline.__call__``); ``cfg_scale`` is also
    the exported pipeline's ``default_cfg_scale`` (the guidance a call without ``cfg_scale`` uses; a linear
    schedule is exported as its final scale, constant)."""

    cfg_scale: float = 4.0
    cfg_schedule: Literal["constant", "linear"] = "constant"
    cfg_scale_start: float = 1.0

    def __post_init__(self) -> None:
        # checked when the config is read, not at the export after the training
        if not math.isfinite(self.cfg_scale) or self.cfg_scale < 1:
            raise ValueError(
                f"sample.cfg_scale must be a finite number >= 1 (1: no guidance), got {self.cfg_scale}"
            )


@dataclass
class DARTTrainingConfig:
    """``recipes/train_dart.py``: x₀-MSE over all T levels of every image (teacher forcing), class dropout 0.1."""

    data: DataConfig = field(default_factory=lambda: DataConfig(augment="random_crop", random_flip=True))
    model: DARTModelConfig = field(default_factory=DARTModelConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, betas=(0.9, 0.95), warmup_steps=100)
    )
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(enabled=True, decay=0.999))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/dart"))
    sample: DARTSampleConfig = field(default_factory=DARTSampleConfig)
