"""Typed configuration of the sequential diffusion tokenizer and its named presets.

Implements the hyperparameters of D-AR (Gao & Shou 2025) §3 and of the official `configs/tokenizer_v1.yaml`
(see reference §2.1). One flat dataclass; field groups are prefixed by the part they configure:

- ``encoder_*``: patch embedding + learned low-rank queries + masked transformer blocks;
- ``codebook_*`` and the VQ training switches: the cosine-similarity vector quantiser;
- ``condition_*``: the causal transformer that turns codes into per-token conditions (the official
  "decoder layers");
- ``decoder_*``: the pixel-space flow-matching velocity network (SiT blocks);
- ``repa_*``: the optional REPA projection head used only in training.

Defaults live here and only here; presets are instances of this dataclass.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, fields
from typing import Any

from tokenizer.sampler import Sampler

CONDITION_CONTEXTS = ("group", "prefix")


def check_noise_scale(value: Any) -> float:
    """Validate a decoder noise scale (the standard deviation of x₀): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"noise_scale must be a finite number >= 0 (1: the flow's prior), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TokenizerConfig:
    """Configuration of :class:`tokenizer.DARTokenizer`. Defaults are the official ``tokenizer_v1`` sizes.

    Attributes:
        image_size: side of the square RGB images the tokenizer encodes and decodes (pixels).
        num_tokens: N, number of discrete codes per image.
        num_steps: K, number of code groups and of decoder denoising steps; group k drives step k.
        codebook_size: number of codebook entries (the AR vocabulary of image codes).
        codebook_dim: dimension of a code vector (8 in the paper).
        head_dim: attention head dimension used everywhere (64 in the paper).
        mlp_ratio: hidden width of every MLP as a multiple of its input width.
        rope_theta: base θ of the 2-D rotary embedding.
        encoder_patch_size: patch size of the encoder's patch embedding.
        encoder_dim: width of the encoder.
        num_encoder_layers: gated transformer blocks in the encoder.
        query_rank: width of the low-rank learned query table (queries = Linear(rank → dim)(table row)).
        condition_dim: width of the causal condition network.
        num_condition_layers: causal gated transformer blocks in the condition network.
        position_table_size: rows of the learned query and condition position tables; only the first
            ``num_tokens`` rows are used. The official checkpoint has 1024 rows. ``None`` means ``num_tokens``.
        decoder_patch_size: patch size of the pixel decoder (pure rearrangement patching).
        decoder_dim: width of the pixel decoder.
        num_decoder_layers: SiT blocks in the pixel decoder.
        data_scale: multiplier that maps images in [-1, 1] to flow data x₁ (the official ``data_std``).
        time_shift: β of the time shift s = u / (u + β(1 − u)).
        sampler: default ODE step, ``"adams2"`` (official fixed-weight Adams–Bashforth-2) or ``"euler"``.
        noise_scale: standard deviation of the decoder's drawn starting noise x₀ (``initial_noise``; 1 = the
            flow's prior, as the paper and the official code sample). Below 1 trades diversity for fidelity to the
            codes, like a sampling temperature; training always uses N(0, I), and noise passed in is used as is.
        repa_layer: index of the decoder block whose *input* feeds the REPA head; ``None`` = no head.
        repa_hidden_dim: hidden width of the REPA head MLP.
        repa_dim: output width of the REPA head (the target feature width, 768 for DINOv2-B).
        repa_grid: side of the token grid the REPA head outputs (decoder grid average-pooled down to it).
        commitment_weight: weight of the VQ commitment loss (β = 0.25).
        codebook_decay: EMA decay of the codebook updates.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        threshold_ema_dead_code: replace codes whose EMA cluster size falls below this (0 = off).
        decoder_condition_context: what the decoder's cross-attention sees at step k: ``"group"`` (official:
            the conditions of group k only) or ``"prefix"`` (the conditions of groups 0…k; still streamable,
            since group k is finished when step k runs).
        decoder_condition_residual: also add each block's cross-attention output to the residual stream
            (official: it only drives the adaLN modulation).
        decoder_position_embedding: add a learned absolute position embedding to the decoder's image tokens
            (ours; official: positions only through RoPE, so at the noise end, where the tokens are noise, the
            only positional signal is the rotated cross-attention query).
        decoder_condition_tokens: also feed the conditions the step sees to the decoder's self-attention as
            extra tokens (ours, in-context conditioning; official: they reach the image only through
            cross-attention → adaLN).
        regression_weight: weight of an auxiliary training term (ours; 0 = off, the official objective): a
            deterministic decoder (``regressor``, same size as the pixel decoder, prefix context and residual
            path and absolute positions, input zeros at t = 0) regresses the image from the conditions of groups 0…g, so the early
            codes get a direct gradient to carry the coarse shape. Training only, unless
            ``decoder_estimate_input`` is set.
        regression_all_groups: also regress the image from the conditions of all groups in the same step (ours;
            a second regressor forward; the MSE adds to the prefix one): the plain regression of issue #17's
            bound next to the prefix one (no gain at equal CPU time on the demo: README, "The demo model").
        decoder_estimate_input: also feed the pixel decoder the regressor's image estimate from the conditions
            the step sees (ours; needs ``regression_weight > 0``): step k's estimate uses groups 0…k only, so
            decoding stays streamable, and the flow decoder refines a placed shape instead of placing it from
            cross-attention alone. Costs one regressor forward per decode step; no measurable gain at equal CPU
            time on the demo (README, "The demo model").
        rotation_trick: pass gradients through the VQ with the rotation trick instead of the
            straight-through estimator (the official code uses straight-through).
    """

    image_size: int = 256
    num_tokens: int = 256
    num_steps: int = 8
    codebook_size: int = 16384
    codebook_dim: int = 8
    head_dim: int = 64
    mlp_ratio: int = 4
    rope_theta: float = 10000.0
    encoder_patch_size: int = 16
    encoder_dim: int = 768
    num_encoder_layers: int = 8
    query_rank: int = 8
    condition_dim: int = 768
    num_condition_layers: int = 8
    position_table_size: int | None = None
    decoder_patch_size: int = 8
    decoder_dim: int = 768
    num_decoder_layers: int = 12
    data_scale: float = 0.6
    time_shift: float = 2.0
    sampler: str = Sampler.ADAMS2.value
    noise_scale: float = 1.0
    repa_layer: int | None = 8
    repa_hidden_dim: int = 2048
    repa_dim: int = 768
    repa_grid: int = 16
    commitment_weight: float = 0.25
    codebook_decay: float = 0.99
    kmeans_init: bool = False
    threshold_ema_dead_code: float = 0.0
    rotation_trick: bool = False
    decoder_condition_context: str = "group"
    decoder_condition_residual: bool = False
    decoder_position_embedding: bool = False
    decoder_condition_tokens: bool = False
    regression_weight: float = 0.0
    regression_all_groups: bool = False
    decoder_estimate_input: bool = False

    def __post_init__(self) -> None:
        if self.position_table_size is None:
            object.__setattr__(self, "position_table_size", self.num_tokens)
        positive = [
            "image_size",
            "num_tokens",
            "num_steps",
            "codebook_size",
            "codebook_dim",
            "head_dim",
            "mlp_ratio",
            "encoder_patch_size",
            "encoder_dim",
            "query_rank",
            "condition_dim",
            "decoder_patch_size",
            "decoder_dim",
            "num_decoder_layers",
            "repa_hidden_dim",
            "repa_dim",
            "repa_grid",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TokenizerConfig.{name} must be a positive int, got {value!r}")
        for name in ("num_encoder_layers", "num_condition_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TokenizerConfig.{name} must be a non-negative int, got {value!r}")
        if self.num_tokens % self.num_steps:
            raise ValueError(
                f"num_tokens={self.num_tokens} must be a multiple of num_steps={self.num_steps} "
                "(each decoder step consumes one whole group of codes)"
            )
        for name in ("encoder_patch_size", "decoder_patch_size"):
            if self.image_size % getattr(self, name):
                raise ValueError(
                    f"image_size={self.image_size} must be a multiple of {name}={getattr(self, name)}"
                )
        for name in ("encoder_dim", "condition_dim", "decoder_dim"):
            if getattr(self, name) % self.head_dim:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of head_dim={self.head_dim}"
                )
        if self.head_dim % 4:
            raise ValueError(
                f"head_dim={self.head_dim} must be a multiple of 4 (2-D RoPE rotates pairs per axis)"
            )
        if self.position_table_size < self.num_tokens:
            raise ValueError(
                f"position_table_size={self.position_table_size} must be >= num_tokens={self.num_tokens}"
            )
        if self.decoder_condition_context not in CONDITION_CONTEXTS:
            raise ValueError(
                f"decoder_condition_context must be one of {list(CONDITION_CONTEXTS)}, "
                f"got {self.decoder_condition_context!r}"
            )
        if not isinstance(self.decoder_condition_tokens, bool):
            raise ValueError(
                f"decoder_condition_tokens must be a bool, got {self.decoder_condition_tokens!r}"
            )
        if not isinstance(self.decoder_position_embedding, bool):
            raise ValueError(
                f"decoder_position_embedding must be a bool, got {self.decoder_position_embedding!r}"
            )
        if not isinstance(self.decoder_condition_residual, bool):
            raise ValueError(
                f"decoder_condition_residual must be a bool, got {self.decoder_condition_residual!r}"
            )
        weight = self.regression_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < float("inf"):
            raise ValueError(f"regression_weight must be a finite number >= 0, got {weight!r}")
        if not isinstance(self.decoder_estimate_input, bool):
            raise ValueError(f"decoder_estimate_input must be a bool, got {self.decoder_estimate_input!r}")
        if not isinstance(self.regression_all_groups, bool):
            raise ValueError(f"regression_all_groups must be a bool, got {self.regression_all_groups!r}")
        if self.regression_all_groups and weight == 0:
            raise ValueError(
                "regression_all_groups adds to the regression term: set regression_weight > 0 (e.g. 1.0)"
            )
        if self.decoder_estimate_input and weight == 0:
            raise ValueError(
                "decoder_estimate_input feeds the decoder the regressor's estimate: set regression_weight > 0 "
                "(e.g. 1.0) to build and train the regressor"
            )
        if self.sampler not in {s.value for s in Sampler}:
            raise ValueError(f"sampler must be one of {[s.value for s in Sampler]}, got {self.sampler!r}")
        object.__setattr__(self, "sampler", Sampler(self.sampler).value)  # a plain str in config.json
        check_noise_scale(self.noise_scale)
        if not self.data_scale > 0 or not self.time_shift > 0:
            raise ValueError(
                f"data_scale and time_shift must be > 0, got {self.data_scale} and {self.time_shift}"
            )
        if self.repa_layer is not None:
            if not 0 <= self.repa_layer < self.num_decoder_layers:
                raise ValueError(
                    f"repa_layer={self.repa_layer} must index a decoder block in [0, {self.num_decoder_layers}) "
                    "or be None (no REPA head)"
                )
            if self.decoder_grid % self.repa_grid:
                raise ValueError(
                    f"repa_grid={self.repa_grid} must divide the decoder token grid side {self.decoder_grid}"
                )
        if not 0.0 <= self.codebook_decay <= 1.0:
            raise ValueError(f"codebook_decay must be in [0, 1], got {self.codebook_decay}")

    def regressor_config(self) -> TokenizerConfig:
        """The configuration the auxiliary regressor's decoder is built from (prefix context, residual path,
        absolute positions: its input is zeros, so RoPE alone cannot tell its tokens apart)."""
        return dataclasses.replace(
            self,
            decoder_condition_context="prefix",
            decoder_condition_residual=True,
            decoder_position_embedding=True,
            decoder_estimate_input=False,
            repa_layer=None,
        )

    @property
    def tokens_per_step(self) -> int:
        """Codes per group, N / K (32 for tokenizer_v1)."""
        return self.num_tokens // self.num_steps

    @property
    def decoder_grid(self) -> int:
        """Side of the pixel decoder's token grid (32 for tokenizer_v1)."""
        return self.image_size // self.decoder_patch_size

    @property
    def has_repa_head(self) -> bool:
        """Whether the pixel decoder carries the training-only REPA projection head."""
        return self.repa_layer is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Build a config from a dict, rejecting unknown keys by name.

        Keys starting with ``_`` (diffusers bookkeeping such as ``_class_name``) are ignored.
        """
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TokenizerConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def replace(self, **overrides: Any) -> TokenizerConfig:
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown TokenizerConfig fields {unknown}; known fields are {sorted(known)}")
        return dataclasses.replace(self, **overrides)


TOKENIZER_PRESETS: dict[str, TokenizerConfig] = {
    # Official D-AR tokenizer (300.1M parameters without the REPA head, 307.4M with it).
    "tokenizer_v1": TokenizerConfig(position_table_size=1024),
    # Unit tests: 16 px, 16 codes in 4 groups of 4, a tiny REPA head so its path is exercised.
    "tiny": TokenizerConfig(
        image_size=16,
        num_tokens=16,
        num_steps=4,
        codebook_size=64,
        codebook_dim=8,
        head_dim=16,
        encoder_patch_size=4,
        encoder_dim=32,
        num_encoder_layers=1,
        query_rank=8,
        condition_dim=32,
        num_condition_layers=1,
        decoder_patch_size=4,
        decoder_dim=32,
        num_decoder_layers=2,
        repa_layer=1,
        repa_hidden_dim=32,
        repa_dim=16,
        repa_grid=2,
    ),
    # Embedded demo (32 px animal silhouettes): 64 codes in 8 groups of 8; ~1.7M parameters (~7 MB fp32).
    "demo": TokenizerConfig(
        image_size=32,
        num_tokens=64,
        num_steps=8,
        codebook_size=512,
        codebook_dim=8,
        head_dim=32,
        encoder_patch_size=4,
        encoder_dim=128,
        num_encoder_layers=2,
        query_rank=8,
        condition_dim=128,
        num_condition_layers=2,
        decoder_patch_size=4,
        decoder_dim=128,
        num_decoder_layers=2,
        repa_layer=None,
        # β = 3: more training times near the noise end, where the first code groups decide the silhouette
        # (measured against β = 1 in the README's demo section).
        time_shift=3.0,
    ),
}


def takes_config_fields(init):
    """Give ``__init__(self, **fields)`` the explicit keyword signature of :class:`TokenizerConfig`.

    diffusers' ``register_to_config`` and ``from_config`` read the init signature to know which config keys to
    record and pass; this keeps the defaults in one place (the dataclass).
    """
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in dataclasses.fields(TokenizerConfig)
    ]
    init.__signature__ = inspect.Signature(params)
    return init
