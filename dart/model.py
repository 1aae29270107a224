"""`DARTModel`: a stock ``transformers.LlamaModel`` read through DART's block-causal mask (DART §3).

Inputs go through ``inputs_embeds``: patch projection + learned level embedding + learned spatial embedding
(2-D sin-cos init; the backbone's 1-D RoPE runs over the raster index, the same at every level), behind a
class / null token from the backbone's own token table. Level t's hidden states feed a zero-initialised x̂_0
head (DART, DART-AR) or DART-FM's flow head (:mod:`dart.flow_head`). The backbone is built from a
``LlamaConfig`` derived from the :class:`~dart.config.DARTConfig` (no subclass, no patching); the 4-D mask goes
through the public ``attention_mask`` argument as an additive float mask (:func:`dart.sequence.additive_mask`),
the KV cache through ``cache=``. One forward trains all T levels (teacher forcing). Saved and loaded through
diffusers (``config.json`` + ``diffusion_pytorch_model.safetensors``) with strict key matching.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import fields
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dart.config import DARTConfig
from dart.flow_head import FlowHead
from dart.layers import sincos_table, sincos_table_2d
from dart.outputs import DARTLosses, DARTOutput
from dart.schedule import LevelSchedule, noise_levels
from dart.sequence import SequenceLayout, additive_mask, patchify

__all__ = ["DARTLosses", "DARTModel", "DARTOutput", "parameter_count"]

logger = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-3


def _takes_config_fields(init):
    """Give ``__init__(self, **fields)`` the keyword signature of :class:`DARTConfig` (read by diffusers)."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in fields(DARTConfig)
    ]
    init.__signature__ = inspect.Signature(params)
    return init


class DARTModel(ModelMixin, ConfigMixin):
    """DART / DART-AR / DART-FM network (the variant is ``config.variant``).

    Build with ``DARTModel.from_preset("DART-B")`` (or ``"demo"``, ``"tiny"``), with
    ``DARTModel(**DARTConfig(...).to_dict())``, or load with ``DARTModel.from_pretrained(folder)``.
    ``model.config`` is the :class:`~dart.config.DARTConfig`.
    """

    @register_to_config
    @_takes_config_fields
    def __init__(self, **config_fields: Any) -> None:
        super().__init__()
        config = DARTConfig.from_dict(config_fields)
        self._dart_config = config
        self.register_to_config(**config.to_dict())  # resolved values (intermediate_size, id2label keys)
        self._layout = SequenceLayout.from_config(config)
        self._schedule = LevelSchedule.from_config(config)
        d, dim = config.hidden_size, config.token_dim
        from transformers import LlamaModel

        self.backbone = LlamaModel(config.to_llama_config())  # its token table = class + null embeddings
        self.patch_embed = nn.Linear(dim, d)
        self.level_embed = nn.Embedding(config.num_levels, d)
        self.position_embed = nn.Parameter(torch.empty(config.tokens_per_level, d))
        with torch.no_grad():
            self.level_embed.weight.copy_(sincos_table(torch.arange(config.num_levels), d))
            self.position_embed.copy_(sincos_table_2d(config.grid_size, d))
        if config.variant == "dart_fm":
            self.fm_head = FlowHead(dim, d, config.fm_hidden_size, config.fm_depth, config.fm_prediction)
        else:
            self.x0_head = nn.Linear(d, dim)
            nn.init.zeros_(self.x0_head.weight)
            nn.init.zeros_(self.x0_head.bias)

    # ------------------------------------------------------------------ construction and loading

    @property
    def config(self) -> DARTConfig:  # type: ignore[override]
        """The typed configuration."""
        return self._dart_config

    @property
    def layout(self) -> SequenceLayout:
        """Positions, levels and masks of the token sequence."""
        return self._layout

    @property
    def schedule(self) -> LevelSchedule:
        """γ_t, SNR_t, Γ_t and loss weights (float64, computed from the config, never saved)."""
        return self._schedule

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> DARTModel:
        """Randomly initialised model from a preset of :data:`DART_PRESETS`, with field changes."""
        return cls(**DARTConfig.from_preset(name, **changes).to_dict())

    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any):
        """diffusers ``from_config`` that also accepts a :class:`DARTConfig`."""
        if isinstance(config, DARTConfig):
            config = config.to_dict()
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> DARTModel:
        """Load strictly: a missing, unexpected or mis-shaped weight raises ``ValueError`` naming them.

        Args:
            pretrained_model_name_or_path: folder written by ``save_pretrained`` (or a hub id).
            **kwargs: passed on to diffusers' ``ModelMixin.from_pretrained`` (e.g. ``subfolder``); weights are
                read from safetensors only.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if (os.path.isabs(path) or path.startswith((".", "~"))) and not os.path.isdir(
            os.path.expanduser(path)
        ):
            raise FileNotFoundError(f"no DART model folder at {path} (expected config.json + *.safetensors).")
        want_info = kwargs.pop("output_loading_info", False)
        if kwargs.get("use_safetensors") is False:
            raise ValueError("DARTModel folders hold safetensors only: do not pass use_safetensors=False.")
        kwargs["use_safetensors"] = True  # never fall back to pickled .bin weights
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, output_loading_info=True, **kwargs
            )
        except (RuntimeError, ValueError) as error:  # size mismatches (torch's or diffusers' report)
            raise ValueError(
                f"cannot load {pretrained_model_name_or_path}: {error} Were config.json and the weights written "
                "together by save_pretrained?"
            ) from error
        problems = {
            k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        problems = {k: v for k, v in problems.items() if v}
        if problems or info.get("error_msgs"):
            details = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in problems.items())
            errors = f"; errors: {info['error_msgs']}" if info.get("error_msgs") else ""
            raise ValueError(
                f"weights in {pretrained_model_name_or_path} do not match the DARTModel built from its config "
                f"({details}{errors}); was the folder written by a different configuration or version? Re-export "
                "it with save_pretrained from the model it belongs to."
            )
        return (model, info) if want_info else model

    # ------------------------------------------------------------------ validation

    def check_samples(self, samples: Any) -> Tensor:
        """Validate model-space samples: (B, in_channels, sample_size, sample_size) float (pixels in [-1, 1])."""
        cfg = self.config
        size, channels = cfg.sample_size, cfg.in_channels
        what = "images in [-1, 1]" if cfg.space == "pixel" else "scaled VAE latents"
        expected = f"(B, {channels}, {size}, {size}) float {what}"
        if not isinstance(samples, Tensor):
            raise TypeError(f"samples must be a torch.Tensor {expected}, got {type(samples).__name__}.")
        if not samples.is_floating_point():
            raise ValueError(
                f"samples must be a float tensor {expected}, got {samples.dtype}; convert uint8 images with "
                "images.float() / 127.5 - 1."
            )
        if samples.ndim != 4 or tuple(samples.shape[1:]) != (channels, size, size) or samples.shape[0] == 0:
            raise ValueError(f"samples must have shape {expected}, got {tuple(samples.shape)}.")
        if not torch.isfinite(samples).all():
            raise ValueError(f"samples contain NaN or infinite values; expected {expected}.")
        if cfg.space == "pixel" and samples.detach().abs().max() > 1 + RANGE_TOLERANCE:
            lo, hi = float(samples.min()), float(samples.max())
            raise ValueError(
                f"images must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; map uint8 with x/127.5 - 1."
            )
        return samples.to(self.dtype)

    def check_labels(self, class_labels: Any, batch: int | None = None, *, allow_null: bool = True) -> Tensor:
        """Validate class ids: (B,) integers in [0, num_classes) (or the null id ``num_classes``)."""
        cfg = self.config
        labels = torch.as_tensor(class_labels)
        if labels.numel() == 0:
            raise ValueError("class_labels is empty: pass at least one class id.")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"class_labels must be integer class ids, got dtype {labels.dtype}.")
        labels = labels.reshape(-1).long()
        top = cfg.num_classes + 1 if allow_null else cfg.num_classes
        bad = labels[(labels < 0) | (labels >= top)]
        if bad.numel():
            null = f" or {cfg.num_classes} (null)" if allow_null else ""
            raise ValueError(
                f"class id(s) {bad.tolist()} out of range: this model knows classes 0..{cfg.num_classes - 1}{null}."
            )
        if batch is not None and labels.shape[0] != batch:
            raise ValueError(f"got {labels.shape[0]} class labels for {batch} samples; pass one per sample.")
        return labels.to(self.device)

    # ------------------------------------------------------------------ building blocks (also used by the sampler)

    def embed_class(self, class_labels: Tensor) -> Tensor:
        """(B,) ids in [0, num_classes] (``num_classes`` = null) → (B, 1, d) class-token embeddings."""
        return self.backbone.embed_tokens(class_labels)[:, None]

    def embed_tokens(self, tokens: Tensor, start: int) -> Tensor:
        """Embed noisy tokens that occupy full-sequence positions ``[start, start + n)``, start ≥ 1.

        Args:
            tokens: (B, n, D) noisy patch tokens (model dtype).
            start: full-sequence position of the first one (see :mod:`dart.sequence`).

        Returns:
            (B, n, d) patch projection + level embedding + spatial embedding.
        """
        n = tokens.shape[1]
        positions = torch.arange(start, start + n, device=tokens.device)
        if start < 1 or start + n > self.layout.full_length:
            raise ValueError(
                f"token positions [{start}, {start + n}) fall outside 1 … {self.layout.full_length - 1}."
            )
        levels = self.layout.level_ids(tokens.device)[positions]  # (n,) in 1 … T
        spatial = (positions - 1) % self.config.tokens_per_level
        return self.patch_embed(tokens) + self.level_embed(levels - 1) + self.position_embed[spatial]

    def backbone_hidden(self, inputs_embeds: Tensor, start: int, cache=None) -> Tensor:
        """Run the stock backbone on positions ``[start, start + n)`` under the model's mask.

        Args:
            inputs_embeds: (B, n, d).
            start: full-sequence position of the first input; with a ``cache`` it must hold exactly ``start``
                positions already.
            cache: a ``transformers`` cache (``DynamicCache``) or ``None`` (then ``start`` must be 0).

        Returns:
            (B, n, d) last hidden states (after the backbone's final RMSNorm).
        """
        n = inputs_embeds.shape[1]
        held = 0 if cache is None else cache.get_seq_length()
        if held != start:
            raise ValueError(
                f"inputs start at position {start} but the cache holds {held} positions; feed the sequence in "
                "order (a transformers release that ignores `cache=` also ends up here: use transformers>=5.24)."
            )
        device = inputs_embeds.device
        allowed = self.layout.mask(rows=(start, start + n), device=device)
        mask = additive_mask(allowed, inputs_embeds.dtype)
        position_ids = self.layout.position_ids(device)[start : start + n][None]
        out = self.backbone(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        if cache is not None and cache.get_seq_length() != start + n:
            raise RuntimeError(
                f"the KV cache holds {cache.get_seq_length()} positions after feeding {start + n}: this "
                "transformers release did not use `cache=`; install transformers>=5.24."
            )
        return out.last_hidden_state

    def predict_x0(self, hidden: Tensor) -> Tensor:
        """x̂_0 tokens from hidden states (DART, DART-AR): (..., d) → (..., D)."""
        if self.config.variant == "dart_fm":
            raise ValueError("DART-FM has no regression head; sample x̂_0 with sample_x0(hidden, ...).")
        return self.x0_head(hidden)

    # ------------------------------------------------------------------ teacher forcing and training

    def forward(self, noisy_levels: Tensor, class_labels: Tensor) -> DARTOutput:
        """Teacher-forced pass over every level at once.

        Args:
            noisy_levels: (B, T, K, D) noisy tokens, index t − 1 = level t (as :func:`dart.schedule.noise_levels`
                returns for patch tokens).
            class_labels: (B,) ids in [0, num_classes], ``num_classes`` = null class.

        Returns:
            :class:`DARTOutput`, indexed by level.
        """
        cfg = self.config
        batch, num_levels, k, dim = noisy_levels.shape
        if (num_levels, k, dim) != (cfg.num_levels, cfg.tokens_per_level, cfg.token_dim):
            raise ValueError(
                f"noisy_levels must have shape (B, {cfg.num_levels}, {cfg.tokens_per_level}, {cfg.token_dim}), got "
                f"{tuple(noisy_levels.shape)}."
            )
        labels = self.check_labels(class_labels, batch)
        sequence = noisy_levels.flip(1).reshape(batch, num_levels * k, dim)  # noisiest level first
        if cfg.variant == "dart_ar":
            sequence = sequence[:, :-1]  # position j predicts token j + 1 of the full sequence
        embeds = torch.cat([self.embed_class(labels), self.embed_tokens(sequence, start=1)], dim=1)
        hidden = self.backbone_hidden(embeds, start=0)  # (B, input_length, d)
        if cfg.variant != "dart_ar":
            hidden = hidden[:, 1:]
        hidden = hidden.reshape(batch, num_levels, k, -1).flip(1)  # (B, T, K, d), index t − 1 = level t
        x0 = None if cfg.variant == "dart_fm" else self.predict_x0(hidden)
        return DARTOutput(hidden=hidden, x0=x0)

    def training_losses(
        self,
        images: Tensor,
        class_labels: Tensor,
        generator: torch.Generator | None = None,
        *,
        class_dropout: float | None = None,
    ) -> DARTLosses:
        """Losses of one training step: noise every level of every sample independently and predict x_0.

        Args:
            images: (B, in_channels, sample_size, sample_size) model-space samples: images in [-1, 1] in pixel
                space, scaled VAE latents in latent space (``DARTPipeline.encode_images`` makes them).
            class_labels: (B,) ids in [0, num_classes).
            generator: for class dropout, the level noise and (DART-FM) the flow times and noise.
            class_dropout: probability of replacing a label by the null class; ``None`` uses
                ``config.class_dropout`` in training mode and 0 in eval mode.

        Returns:
            :class:`DARTLosses`; backpropagate ``.total``.
        """
        cfg = self.config
        x0 = self.check_samples(images)
        batch = x0.shape[0]
        labels = self.check_labels(class_labels, batch, allow_null=False)
        p = (cfg.class_dropout if self.training else 0.0) if class_dropout is None else float(class_dropout)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1], got {p}.")
        dropped = torch.zeros(batch, dtype=torch.bool, device=self.device)
        if p > 0:
            draw = torch.rand(batch, generator=generator, device=generator.device if generator else None)
            dropped = draw.to(self.device) < p
            labels = torch.where(dropped, torch.full_like(labels, cfg.null_class), labels)
        target = patchify(x0, cfg.patch_size)  # (B, K, D)
        noisy = noise_levels(target, self.schedule.gammas, generator).noisy  # (B, T, K, D)
        out = self(noisy, labels)
        if cfg.variant == "dart_fm":
            d = out.hidden.shape[-1]
            clean = target[:, None].expand(-1, cfg.num_levels, -1, -1)
            per_token = self.fm_head.loss(
                clean.reshape(-1, cfg.token_dim), out.hidden.reshape(-1, d), cfg.fm_samples, generator
            )
            per_level = per_token.view(batch, cfg.num_levels, -1).mean(dim=(0, 2))
        else:
            per_level = (out.x0 - target[:, None]).pow(2).mean(dim=(0, 2, 3))  # (T,)
        weights = self.schedule.loss_weights.to(device=per_level.device, dtype=per_level.dtype)
        return DARTLosses(
            total=(weights * per_level).mean(), per_level=per_level.detach(), weights=weights, dropped=dropped
        )

    @torch.no_grad()
    def sample_x0(
        self,
        hidden: Tensor,
        *,
        uncond_hidden: Tensor | None = None,
        cfg_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x̂_0 tokens from hidden states, guided when ``uncond_hidden`` is given.

        DART / DART-AR: x̂ = x̂_u + w·(x̂_c − x̂_u) on the regression head's outputs. DART-FM: the flow head's
        ``fm_steps`` Euler steps with guidance on its velocity (see :mod:`dart.flow_head`).

        Args:
            hidden: (B, n, d) conditional hidden states.
            uncond_hidden: (B, n, d) unconditional (null-class) hidden states, or ``None``.
            cfg_scale: guidance scale w.
            generator: the flow head's starting noise (DART-FM only; unused otherwise).

        Returns:
            (B, n, D) x̂_0 tokens.
        """
        if self.config.variant != "dart_fm":
            x0 = self.predict_x0(hidden)
            if uncond_hidden is None:
                return x0
            x0_uncond = self.predict_x0(uncond_hidden)
            return x0_uncond + cfg_scale * (x0 - x0_uncond)
        batch, n, d = hidden.shape
        uncond = None if uncond_hidden is None else uncond_hidden.reshape(-1, d)
        tokens = self.fm_head.sample(
            hidden.reshape(-1, d),
            self.config.fm_steps,
            uncond=uncond,
            cfg_scale=cfg_scale,
            generator=generator,
        )
        return tokens.view(batch, n, -1)


def parameter_count(config: DARTConfig) -> int:
    """Parameters of the model a config builds (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        model = DARTModel(**config.to_dict())
    return sum(p.numel() for p in model.parameters())
