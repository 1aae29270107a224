"""Typed configuration of DART (Gu et al. 2025, arXiv 2410.08159) and its named presets.

One flat frozen dataclass, :class:`DARTConfig`; field groups:

- data space: ``image_size``, ``space`` (``"pixel"`` or ``"latent"`` through a diffusers ``AutoencoderKL``),
  ``in_channels``, ``latent_factor``, ``patch_size``;
- noise process: ``num_levels`` T, ``schedule``, ``schedule_shift``, ``loss_weighting``, ``loss_weight_clip``
  (see :mod:`dart.schedule`);
- model: ``variant`` (``"dart"``, ``"dart_ar"``, ``"dart_fm"``: ONE field selects the variant), ``attention``
  (``"block_causal"``, or the ``"markovian"`` / ``"own_level"`` ablations), the stock-Llama backbone sizes,
  class conditioning;
- ``fm_*``: the per-token flow-matching head of DART-FM.

Defaults live here and only here; presets are instances of this dataclass (reference dart.md §2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["DART_PRESETS", "DARTConfig", "swiglu_hidden_size"]

Variant = Literal["dart", "dart_ar", "dart_fm"]
Attention = Literal["block_causal", "markovian", "own_level"]
Space = Literal["pixel", "latent"]
ScheduleKind = Literal["per_level_cosine", "cumulative_cosine", "cumulative_flow"]
LossWeighting = Literal["uniform", "clipped_cumulative_snr", "cumulative_snr"]
FMPrediction = Literal["velocity", "x0"]

VARIANTS = ("dart", "dart_ar", "dart_fm")
ATTENTIONS = ("block_causal", "markovian", "own_level")
SPACES = ("pixel", "latent")
SCHEDULES = ("per_level_cosine", "cumulative_cosine", "cumulative_flow")
LOSS_WEIGHTINGS = ("uniform", "clipped_cumulative_snr", "cumulative_snr")
FM_PREDICTIONS = ("velocity", "x0")


def swiglu_hidden_size(hidden_size: int, multiple_of: int = 64) -> int:
    """Llama's SwiGLU width for a 4d MLP budget: ``round_up(8d/3, multiple_of)`` (512 for d = 192)."""
    return -(-(8 * hidden_size // 3) // multiple_of) * multiple_of


@dataclass(frozen=True)
class DARTConfig:
    """Configuration of :class:`dart.DARTModel`. Defaults are the DART-XL latent setting of the paper.

    Attributes:
        image_size: side of the square output images (pixels).
        space: ``"pixel"``: the model denoises images in [-1, 1] directly (the demo); ``"latent"``: it denoises
            the scaled latents of a diffusers ``AutoencoderKL`` (the paper, "following DiT"), which the pipeline
            holds as its ``vae`` component (its ``scaling_factor`` comes from the VAE's own config).
        in_channels: channels of the modelled array: 3 (RGB) or 1 (grey) in pixel space, the VAE's
            ``latent_channels`` (4 for the SD VAE) in latent space.
        latent_factor: spatial downsampling of the VAE (8 for the SD VAE); must be 1 in pixel space.
        patch_size: side of the square patches a level is cut into; one patch is one token.
        num_levels: T, number of noise levels (16 in the paper); level T is pure noise.
        schedule: how the signal variances γ_1 > … > γ_T are chosen (:func:`dart.schedule.level_gammas`):
            ``"per_level_cosine"`` γ_t = cos²(π s_t / 2) (the community's choice, the default), or a schedule whose
            cumulative SNR Γ_t traces a standard schedule's SNR at s_t: ``"cumulative_cosine"`` (cot²(π s/2)) or
            ``"cumulative_flow"`` (((1 − s)/s)², rectified flow). s_t = shift(t / T).
        schedule_shift: time shift s ↦ shift·s / (1 + (shift − 1)·s) of the level grid (> 1: noisier levels).
        loss_weighting: weight ω_t of level t's x₀-MSE (:func:`dart.schedule.loss_weights`): ``"uniform"``
            (default), ``"clipped_cumulative_snr"`` min(1 + Γ_t, clip), or the paper's example ``"cumulative_snr"``
            Γ_t (ablation only: it gives the pure-noise level zero weight).
        loss_weight_clip: the clip c of ``"clipped_cumulative_snr"``.
        variant: ``"dart"`` (block-parallel levels, x₀-MSE), ``"dart_ar"`` (token by token inside a level,
            token-causal mask with a one-token shift), ``"dart_fm"`` (DART's backbone with a per-token
            flow-matching head instead of the x₀ regression head).
        attention: ``"block_causal"`` (DART: level t sees the class token, every noisier level and its own
            level) or an ablation with the same backbone and compute: ``"markovian"`` (class token, its own level
            and level t + 1; per layer, so information still climbs one level per layer: with L layers level t's
            output depends on levels t … t + L) or ``"own_level"`` (class token and its own level only: the
            strictly Markovian denoiser x̂_0(x_t) of standard diffusion). DART-AR is token-causal and accepts
            ``"block_causal"`` only.
        hidden_size: backbone width d.
        num_layers: backbone decoder layers.
        num_heads: attention heads (no GQA); ``hidden_size`` must divide into them (head dim 64 in the presets).
        intermediate_size: SwiGLU hidden width; ``None`` derives ``round_up(8d/3, 64)``.
        rms_norm_eps: RMSNorm epsilon of the backbone.
        rope_theta: base of the backbone's 1-D RoPE over the spatial raster index (same ids at every level).
        initializer_range: std of the backbone's normal weight init.
        attention_dropout: dropout on attention probabilities (the only dropout a stock Llama has).
        num_classes: number of classes; id ``num_classes`` is the null class of classifier-free guidance.
        class_dropout: probability of replacing a label by the null class in training (0.1).
        id2label: optional class index → name map; travels with the saved model.
        fm_width: width of the DART-FM head; ``None`` means ``hidden_size``.
        fm_depth: residual adaLN blocks of the DART-FM head.
        fm_steps: Euler steps of the DART-FM head at sampling.
        fm_samples: flow times drawn per token per training step (the head is cheap next to the backbone).
        fm_prediction: what the DART-FM head outputs: ``"x0"`` (default: the clean token, turned into the
            velocity (x̂_0 − x_s)/(1 − s); see :mod:`dart.flow_head`) or ``"velocity"`` directly (the ablation).
    """

    image_size: int = 256
    space: Space = "latent"
    in_channels: int = 4
    latent_factor: int = 8
    patch_size: int = 2
    num_levels: int = 16
    schedule: ScheduleKind = "per_level_cosine"
    schedule_shift: float = 1.0
    loss_weighting: LossWeighting = "uniform"
    loss_weight_clip: float = 5.0
    variant: Variant = "dart"
    attention: Attention = "block_causal"
    hidden_size: int = 1152
    num_layers: int = 28
    num_heads: int = 18
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    attention_dropout: float = 0.0
    num_classes: int = 1000
    class_dropout: float = 0.1
    id2label: dict[int, str] | None = None
    fm_width: int | None = None
    fm_depth: int = 3
    fm_steps: int = 8
    fm_samples: int = 4
    fm_prediction: FMPrediction = "x0"

    def __post_init__(self) -> None:
        positive = [
            "image_size",
            "in_channels",
            "latent_factor",
            "patch_size",
            "num_levels",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_classes",
            "fm_depth",
            "fm_steps",
            "fm_samples",
        ]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DARTConfig.{name} must be a positive int, got {value!r}.")
        for name, choices in (
            ("space", SPACES),
            ("variant", VARIANTS),
            ("attention", ATTENTIONS),
            ("schedule", SCHEDULES),
            ("loss_weighting", LOSS_WEIGHTINGS),
            ("fm_prediction", FM_PREDICTIONS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"DARTConfig.{name} must be one of {choices}, got {getattr(self, name)!r}.")
        if self.num_levels < 2:
            raise ValueError(
                f"num_levels={self.num_levels}: DART needs T ≥ 2 levels (level T is pure noise and predicts only "
                "the class mean)."
            )
        if self.space == "pixel" and self.latent_factor != 1:
            raise ValueError(
                f"latent_factor={self.latent_factor} in pixel space: set latent_factor=1, or space='latent' to "
                "denoise VAE latents."
            )
        if self.image_size % self.latent_factor:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of the VAE's latent_factor={self.latent_factor}."
            )
        if self.sample_size % self.patch_size:
            raise ValueError(
                f"the modelled array is {self.sample_size}×{self.sample_size}, not a multiple of "
                f"patch_size={self.patch_size}; choose a patch size that divides it."
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; pick num_heads so "
                "that the head dim (64 in the presets) is an integer."
            )
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even (RoPE rotates pairs).")
        for name in ("intermediate_size", "fm_width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"DARTConfig.{name} must be a positive int or None, got {value!r}.")
        if self.intermediate_size is None:
            object.__setattr__(self, "intermediate_size", swiglu_hidden_size(self.hidden_size))
        if self.variant == "dart_ar" and self.attention != "block_causal":
            raise ValueError(
                "variant='dart_ar' is token-causal by construction; the attention ablations apply to "
                "variant='dart' or 'dart_fm'. Set attention='block_causal' (the default)."
            )
        for name in ("class_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"DARTConfig.{name} must lie in [0, 1), got {value!r}.")
        for name in ("schedule_shift", "loss_weight_clip", "rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"DARTConfig.{name} must be a positive number, got {value!r}.")
        if self.initializer_range < 0:
            raise ValueError(f"initializer_range must be ≥ 0, got {self.initializer_range}.")
        object.__setattr__(self, "id2label", self._checked_labels(self.id2label))

    def _checked_labels(self, id2label: Any) -> dict[int, str] | None:
        if id2label is None:
            return None
        if not isinstance(id2label, dict):
            raise ValueError(
                f"id2label must be a dict {{class index: name}} or None, got {type(id2label).__name__}."
            )
        labels = {}
        for key, name in id2label.items():
            try:
                index = int(key)  # JSON turns the int keys into strings
            except (TypeError, ValueError):
                raise ValueError(f"id2label key {key!r} is not a class index.") from None
            if not 0 <= index < self.num_classes:
                raise ValueError(f"id2label key {index} is outside the classes 0..{self.num_classes - 1}.")
            labels[index] = str(name)
        return dict(sorted(labels.items()))

    # ------------------------------------------------------------------ derived sizes

    @property
    def sample_size(self) -> int:
        """Side of the modelled array: ``image_size`` in pixel space, ``image_size / latent_factor`` for latents."""
        return self.image_size // self.latent_factor

    @property
    def grid_size(self) -> int:
        """Patches per side of one level."""
        return self.sample_size // self.patch_size

    @property
    def tokens_per_level(self) -> int:
        """K, tokens (patches) per level (256 for 256-px images through the SD VAE with patch 2)."""
        return self.grid_size**2

    @property
    def token_dim(self) -> int:
        """Values per token, ``in_channels · patch_size²``."""
        return self.in_channels * self.patch_size**2

    @property
    def head_dim(self) -> int:
        """Per-head width ``hidden_size / num_heads``."""
        return self.hidden_size // self.num_heads

    @property
    def mask_kind(self) -> str:
        """``"token_causal"`` for DART-AR, else :attr:`attention`."""
        return "token_causal" if self.variant == "dart_ar" else self.attention

    @property
    def sequence_length(self) -> int:
        """Backbone input length in training: ``1 + T·K`` (class + levels), ``T·K`` for DART-AR (shifted)."""
        full = 1 + self.num_levels * self.tokens_per_level
        return full - 1 if self.variant == "dart_ar" else full

    @property
    def null_class(self) -> int:
        """Label id of the null (unconditional) class."""
        return self.num_classes

    @property
    def fm_hidden_size(self) -> int:
        """Width of the DART-FM head."""
        return self.hidden_size if self.fm_width is None else self.fm_width

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (``id2label`` keeps int keys; JSON writers turn them into strings)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DARTConfig:
        """Build a config from a dict, rejecting unknown keys by name.

        Keys starting with ``_`` (diffusers bookkeeping such as ``_class_name``) are ignored.
        """
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DARTConfig fields {unknown}; known fields are {sorted(known)}.")
        return cls(**data)

    def replace(self, **changes: Any) -> DARTConfig:
        """A copy with some fields changed (validated again); a new width re-derives ``intermediate_size``."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown DARTConfig fields {unknown}; known fields are {sorted(known)}.")
        if "hidden_size" in changes and "intermediate_size" not in changes:
            changes["intermediate_size"] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> DARTConfig:
        """A preset of :data:`DART_PRESETS`, optionally with fields changed."""
        if name not in DART_PRESETS:
            raise ValueError(f"unknown DART preset {name!r}; choose one of {sorted(DART_PRESETS)}.")
        return DART_PRESETS[name].replace(**changes)

    def to_llama_config(self, **llama_kwargs: Any):
        """The ``transformers.LlamaConfig`` of the backbone.

        The backbone's token table holds the ``num_classes + 1`` class / null embeddings (image tokens enter
        through ``inputs_embeds``), so it has no unused parameter. Positions are the spatial raster index + 1
        (0 is the class token): ``max_position_embeddings = K + 1``. bos/eos/pad ids are ``None`` (a pad id would
        freeze that embedding row). Extra keyword arguments go to ``LlamaConfig``.
        """
        from transformers import LlamaConfig

        kwargs: dict[str, Any] = dict(
            vocab_size=self.num_classes + 1,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.tokens_per_level + 1,
            initializer_range=self.initializer_range,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            attention_dropout=self.attention_dropout,
            attention_bias=False,
            mlp_bias=False,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            use_cache=True,
            attn_implementation="sdpa",
        )
        kwargs.update(llama_kwargs)
        return LlamaConfig(**kwargs)


def _paper_size(hidden_size: int, num_layers: int, intermediate_size: int) -> DARTConfig:
    # ImageNet 256 through the SD VAE (32×32×4 latents), patch 2 → K = 256 tokens per level, T = 16 (paper §4).
    return DARTConfig(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=hidden_size // 64,
        intermediate_size=intermediate_size,
    )


DART_PRESETS: dict[str, DARTConfig] = {
    # Layers / width / heads of dart.md §2 (head dim 64). The table's parameter counts come from a reading with
    # DiT-style adaLN, which a stock Llama has not; the SwiGLU widths below spend that budget in the MLP so that
    # the built models land within 2 % of ~48M / ~141M / ~464M / ~812M (checked in tests/dart/test_dart_config.py).
    "DART-S": _paper_size(384, 12, 2944),
    "DART-B": _paper_size(768, 12, 4096),
    "DART-L": _paper_size(1024, 24, 4864),
    "DART-XL": _paper_size(1152, 28, 6784),
    # Unit tests: 8-px RGB, patch 2 (K = 16, 12 values per token), T = 4, ~40k parameters.
    "tiny": DARTConfig(
        image_size=8,
        space="pixel",
        in_channels=3,
        latent_factor=1,
        patch_size=2,
        num_levels=4,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        num_classes=4,
        fm_width=32,
        fm_depth=2,
        fm_steps=4,
        fm_samples=2,
    ),
    # 32-px animal silhouettes in pixel space: patch 8 (K = 16 tokens of 192 values), T = 8, 4 × 192-wide layers;
    # ~1.85M parameters (7.4 MB fp32). Sized for CPU: ~0.8 s per batch-32 step on one busy core (patch 4 with
    # 6 layers took ~8 s), so a 2-core hour gives a few thousand steps.
    "demo": DARTConfig(
        image_size=32,
        space="pixel",
        in_channels=3,
        latent_factor=1,
        patch_size=8,
        num_levels=8,
        hidden_size=192,
        num_layers=4,
        num_heads=3,
        intermediate_size=512,
        num_classes=10,
        fm_width=192,
        fm_depth=2,
        fm_steps=8,
    ),
}
