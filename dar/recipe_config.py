"""Top-level configs of the three training recipes; every default lives here (DESIGN §6, CONVENTIONS §3).

YAML files in ``recipes/configs/`` map one-to-one onto these dataclasses (``dar.config_io.load_config``). The
defaults are the paper's (reference §3 for the tokenizer, §4.2 for the AR model) where the paper gives one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dar.data import DataConfig
from dar.training import DebugConfig, EMAConfig, OptimConfig, TrainConfig

__all__ = [
    "ARModelConfig",
    "ARSampleConfig",
    "ARTrainingConfig",
    "ExtractCodesConfig",
    "TokenizerLossConfig",
    "TokenizerModelConfig",
    "TokenizerTrainingConfig",
]


@dataclass
class TokenizerModelConfig:
    """Which tokenizer to train.

    Attributes:
        preset: a key of ``tokenizer.TOKENIZER_PRESETS`` (``tokenizer_v1``, ``demo``, ``tiny``).
        overrides: ``TokenizerConfig`` fields to change, e.g. ``{"num_decoder_layers": 8}``.
        init_from: a ``save_pretrained`` folder to start from (strict load) instead of a random init.
        gradient_checkpointing: trade compute for memory (official: on).
    """

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    gradient_checkpointing: bool = False


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
    debug: DebugConfig = field(default_factory=DebugConfig)


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
    """

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer_path: str | None = None
    num_classes: int | None = None


@dataclass
class ARSampleConfig:
    """Sampling settings of the periodic sample grids."""

    cfg_scale: float = 4.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


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
    sample: ARSampleConfig = field(default_factory=ARSampleConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
