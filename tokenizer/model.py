"""`DARTokenizer`: the sequential diffusion tokenizer of D-AR with its public verbs.

Implements D-AR (Gao & Shou 2025) §3 (reference §2–§3, §5.3–5.4): ``encode`` images into N discrete codes
ordered coarse to fine, ``stream`` / ``decode`` codes back to pixels with a K-step flow-matching sampler where
step k is conditioned on code group k, and ``training_losses`` for training. ``decode`` is ``stream`` run to
the end, so the two cannot drift apart. Saved and loaded through diffusers (``config.json`` +
``diffusion_pytorch_model.safetensors``) with strict key matching.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from tokenizer.checkpoint import drop_diffusers_loader_options, load_weights, resolve_folder
from tokenizer.conditioning import ConditionNetwork
from tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig, check_noise_scale, takes_config_fields
from tokenizer.decoder import PixelDecoder
from tokenizer.encoder import TokenEncoder
from tokenizer.flow import (
    clean_estimate,
    group_of_u,
    interpolate,
    sampling_times,
    scale_images,
    shift_time,
    velocity_target,
)
from tokenizer.inputs import check_codes, check_images, check_noise
from tokenizer.kernels import linear_kernels
from tokenizer.losses import PerceptualLoss, RepaTarget, TokenizerLosses, flow_matching_loss, repa_loss
from tokenizer.quantizer import VectorQuantizer
from tokenizer.sampler import DecodeStep, Sampler, sampler_step

logger = logging.getLogger(__name__)


class DARTokenizer(ModelMixin, ConfigMixin):
    """Sequential diffusion tokenizer: encoder + cosine VQ + causal condition network + pixel flow decoder.

    Build with ``DARTokenizer.from_preset("tokenizer_v1")`` (or ``"demo"``, ``"tiny"``), with
    ``DARTokenizer(**TokenizerConfig(...).to_dict())``, or load with ``DARTokenizer.from_pretrained(folder)``.
    ``tok.config`` is the :class:`~tokenizer.config.TokenizerConfig` (diffusers' raw dict is ``tok._internal_dict``).
    """

    _supports_gradient_checkpointing = True
    fast_linear = True
    """Run ``encode`` and the decode steps' fp32 CPU linears through oneDNN (:mod:`tokenizer.kernels`)."""

    @register_to_config
    @takes_config_fields
    def __init__(self, **config_fields: Any) -> None:
        super().__init__()
        config = TokenizerConfig.from_dict(config_fields)
        self._tokenizer_config = config
        self.register_to_config(**config.to_dict())  # records resolved values (e.g. position_table_size)
        self.encoder = TokenEncoder(config)
        self.quantizer = VectorQuantizer(config)
        self.conditioning = ConditionNetwork(config)
        self.decoder = PixelDecoder(config)
        # the auxiliary regressor of ``regression_weight`` (decode uses it with decoder_estimate_input only)
        self.regressor = PixelDecoder(config.regressor_config()) if config.regression_weight > 0 else None

    # ------------------------------------------------------------------ construction and loading

    @property
    def config(self) -> TokenizerConfig:  # type: ignore[override]
        """The typed configuration (``num_tokens``, ``tokens_per_step``, ``num_steps``, ``codebook_size``, …)."""
        return self._tokenizer_config

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DARTokenizer:
        """Randomly initialised tokenizer from a named preset of :data:`TOKENIZER_PRESETS`, with field overrides."""
        if name not in TOKENIZER_PRESETS:
            raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {sorted(TOKENIZER_PRESETS)}")
        return cls(**TOKENIZER_PRESETS[name].replace(**overrides).to_dict())

    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any):
        """diffusers ``from_config`` that also accepts a :class:`TokenizerConfig`."""
        if isinstance(config, TokenizerConfig):
            config = config.to_dict()
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        **hub_kwargs: Any,
    ) -> DARTokenizer:
        """Load a saved tokenizer strictly: a missing, unexpected or misshaped weight raises ``ValueError``.

        Args:
            pretrained_model_name_or_path: folder written by ``save_pretrained``, or a Hub id ``owner/name``.
            subfolder: folder inside it (``"tokenizer"`` for a pipeline folder).
            torch_dtype: cast the loaded model to this dtype (default: float32, as saved).
            **hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only``, ``token`` (Hub ids only).

        Returns:
            The tokenizer in eval mode.
        """
        drop_diffusers_loader_options(hub_kwargs, "DARTokenizer")
        folder = resolve_folder(pretrained_model_name_or_path, "tokenizer", subfolder, **hub_kwargs)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder} has no config.json: pass a folder written by save_pretrained")
        try:
            config = TokenizerConfig.from_dict(json.loads(config_file.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise ValueError(f"{config_file} is not a DARTokenizer config: {error}") from None
        model = cls(**config.to_dict())
        load_weights(model, folder, "DARTokenizer")
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return model.eval()

    # ------------------------------------------------------------------ validation

    def _check_images(self, images: Any) -> Tensor:
        return check_images(images, self.config).to(self.dtype)

    def _check_codes(self, codes: Any, *, whole_groups: bool = True) -> Tensor:
        return check_codes(codes, self.config, whole_groups=whole_groups)

    # ------------------------------------------------------------------ public verbs

    @apply_forward_hook
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images → codes.

        Args:
            images: (B, 3, image_size, image_size) float in [-1, 1].

        Returns:
            (B, num_tokens) int64 codes in [0, codebook_size); code i depends only on the image and queries ≤ i.
        """
        images = self._check_images(images)
        with linear_kernels(self.fast_linear, self.device):
            return self.quantizer.codes(self.encoder(images))

    @apply_forward_hook
    def decode(
        self,
        codes: Tensor,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        *,
        sampler: Sampler | str | None = None,
    ) -> Tensor:
        """Codes → images: the last :meth:`stream` step's ``sample``.

        Args:
            codes: (B, n) int64, n a positive multiple of tokens_per_step, n ≤ num_tokens (a prefix of whole
                groups decodes a coarser image; the last step jumps to t = 1).
            num_steps: use at most this many groups/steps (default: all groups given).
            generator: random generator for the initial noise.
            noise: optional (B, 3, image_size, image_size) initial noise x₀ (overrides ``generator``).
            sampler: "adams2" or "euler" (default: ``config.sampler``).

        Returns:
            (B, 3, image_size, image_size) float images, nominally in [-1, 1] (not clamped).
        """
        codes = self._check_codes(codes)
        if num_steps is not None:
            if not isinstance(num_steps, int) or num_steps < 1:
                raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
            tps = self.config.tokens_per_step
            codes = codes[:, : min(codes.shape[1] // tps, num_steps) * tps]
        last = None
        for step in self.stream(codes, generator=generator, noise=noise, sampler=sampler):
            last = step
        return last.sample

    @apply_forward_hook
    def stream(
        self,
        code_chunks: Tensor | Iterable[Tensor],
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        *,
        num_groups: int | None = None,
        sampler: Sampler | str | None = None,
    ) -> Iterator[DecodeStep]:
        """Decode step by step, one code group per step, yielding a :class:`DecodeStep` after each.

        Args:
            code_chunks: either a (B, n) int64 tensor (n a positive multiple of tokens_per_step, split into
                groups), or an iterable of (B, tokens_per_step) int64 tensors consumed lazily: step k is
                computed and yielded as soon as chunk k has arrived, before chunk k + 1 is requested.
            generator: random generator for the initial noise.
            noise: optional (B, 3, image_size, image_size) initial noise x₀.
            num_groups: for an iterable, how many groups it will deliver (default ``config.num_steps``), which
                fixes the time grid in advance; ignored for a tensor.
            sampler: "adams2" or "euler" (default: ``config.sampler``).

        Returns:
            Iterator of :class:`DecodeStep`; the last one's ``sample`` is the decoded image.
        """
        cfg = self.config
        sampler = Sampler(sampler or cfg.sampler)
        if isinstance(code_chunks, Tensor):
            codes = self._check_codes(code_chunks)
            total = codes.shape[1] // cfg.tokens_per_step
            chunks: Iterator[Tensor] = iter(codes.split(cfg.tokens_per_step, dim=1))
        else:
            total = cfg.num_steps if num_groups is None else num_groups
            if not isinstance(total, int) or not 1 <= total <= cfg.num_steps:
                raise ValueError(f"num_groups must be an int in [1, {cfg.num_steps}], got {num_groups!r}")
            chunks = iter(code_chunks)
        if noise is not None:
            check_noise(noise, cfg)
        return self._stream(chunks, total, generator, noise, sampler)

    def _stream(
        self,
        chunks: Iterator[Tensor],
        total: int,
        generator: torch.Generator | None,
        noise: Tensor | None,
        sampler: Sampler,
    ) -> Iterator[DecodeStep]:
        cfg = self.config
        times = sampling_times(total, cfg.num_steps, cfg.time_shift, device=self.device)
        consumed: list[Tensor] = []
        x, previous_velocity = None, None
        for index in range(total):
            try:
                chunk = next(chunks)
            except StopIteration:
                raise ValueError(f"code_chunks ended after {index} groups but num_groups={total}") from None
            chunk = self._check_codes(chunk, whole_groups=False)
            if chunk.shape[1] != cfg.tokens_per_step or (consumed and chunk.shape[0] != consumed[0].shape[0]):
                raise ValueError(
                    f"each code chunk must have shape (B, {cfg.tokens_per_step}) with a constant B, "
                    f"got {tuple(chunk.shape)} at step {index}"
                )
            consumed.append(chunk.to(self.device))
            codes = torch.cat(consumed, dim=1)  # (B, (index + 1)·tokens_per_step)
            if x is None:
                x = self._initial_noise(codes.shape[0], generator, noise)
            # Grad mode is switched per step, never around the yield, so it does not leak into the caller.
            x_next, velocity, preview = self._decode_step(x, codes, index, times, previous_velocity, sampler)
            yield DecodeStep(
                index=index,
                t=float(times[index]),
                t_next=float(times[index + 1]),
                codes=codes,
                sample=x_next * (1.0 / cfg.data_scale),
                preview=preview,
            )
            x, previous_velocity = x_next, velocity

    def initial_noise(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        scale: float | None = None,
    ) -> Tensor:
        """The decoder's starting point x₀ ~ N(0, σ²I), σ = ``scale`` (default ``config.noise_scale``, 1).

        Drawn with diffusers' ``randn_tensor``: a CPU generator gives the same noise on any device, and a list of
        ``batch_size`` generators draws image i with generator i (independent of how images are batched).
        Returns (batch_size, 3, image_size, image_size) in the model dtype.
        """
        size = self.config.image_size
        scale = self.config.noise_scale if scale is None else check_noise_scale(scale)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for {batch_size} images: pass one per image")
        return scale * randn_tensor(  # × 1.0 is exact: the default noise is the paper's
            (batch_size, 3, size, size), generator=generator, device=self.device, dtype=self.dtype
        )

    def _initial_noise(self, batch: int, generator, noise: Tensor | None) -> Tensor:
        if noise is None:
            return self.initial_noise(batch, generator)
        if noise.shape[0] != batch:
            raise ValueError(f"noise has batch size {noise.shape[0]} but the codes have {batch}")
        return noise.to(device=self.device, dtype=self.dtype)

    @apply_forward_hook  # streaming interleaves with the AR model: under CPU offload this step moves us back
    @torch.no_grad()
    def _decode_step(
        self,
        x: Tensor,
        codes: Tensor,
        index: int,
        times: Tensor,
        previous_velocity: Tensor | None,
        sampler: Sampler,
    ) -> tuple[Tensor, Tensor, Tensor]:
        tps = self.config.tokens_per_step
        t, t_next = times[index], times[index + 1]
        with linear_kernels(self.fast_linear, x.device):
            cond = self.conditioning(self.quantizer.lookup(codes).to(x.dtype))
            # The group's conditions (B, tps, D), or with the "prefix" context those of groups 0…index.
            first = 0 if self.config.decoder_condition_context == "prefix" else index * tps
            prefix = cond[:, : (index + 1) * tps]  # groups 0…index, as in training
            estimate = self._regress(prefix) if self.config.decoder_estimate_input else None
            velocity = self.decoder(
                x, t.expand(x.shape[0]), cond[:, first : (index + 1) * tps], estimate=estimate
            ).velocity
        preview = clean_estimate(x, velocity, t) / self.config.data_scale
        x_next = sampler_step(sampler, x, velocity, previous_velocity, t, t_next)
        return x_next, velocity, preview

    def _regress(self, conditions: Tensor, cond_mask: Tensor | None = None) -> Tensor:
        """The auxiliary regressor's image estimate (image units) from ``conditions``: zero input at t = 0."""
        zeros = conditions.new_zeros(conditions.shape[0], 3, self.config.image_size, self.config.image_size)
        return self.regressor(zeros, zeros[:, 0, 0, 0], conditions, cond_mask=cond_mask).velocity

    def training_losses(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        *,
        perceptual_loss: PerceptualLoss | None = None,
        perceptual_weight: float = 0.5,
        repa_target: RepaTarget | None = None,
        repa_weight: float = 0.5,
    ) -> TokenizerLosses:
        """Losses of one training step at one random time per image (reference §3).

        In training mode the VQ commitment loss is computed and the EMA codebook is updated from the tokens
        that can influence the sampled group; in eval mode the VQ loss is 0 and nothing is updated.

        Args:
            images: (B, 3, image_size, image_size) float in [-1, 1].
            generator: random generator for the times u and the noise x₀.
            perceptual_loss: optional callable (images, reconstructions) → loss, e.g. LPIPS, applied to the
                one-jump clean estimate x̂ = (x_s + (1 − s)·v̂) / data_scale.
            perceptual_weight: its weight in ``total``.
            repa_target: optional callable images → (B, repa_grid², repa_dim) frozen features (e.g.
                :class:`tokenizer.losses.Dinov2Target`); needs a REPA head.
            repa_weight: its weight in ``total``.

        Returns:
            :class:`TokenizerLosses`.
        """
        cfg = self.config
        images = self._check_images(images)
        batch, tps = images.shape[0], cfg.tokens_per_step
        u = torch.rand(batch, generator=generator, device=generator.device if generator else None).to(
            self.device
        )
        groups = group_of_u(u, cfg.num_steps)  # (B,)
        s = shift_time(u, cfg.time_shift).to(self.dtype)  # (B,)
        mask = (
            torch.arange(cfg.num_tokens, device=self.device)[None] < ((groups + 1) * tps)[:, None]
        )  # (B, N)
        # every token reaches a loss when the regressor also sees all groups; else those of groups 0…g only
        quantized = self.quantizer.quantize(
            self.encoder(images), mask=None if cfg.regression_all_groups else mask
        )
        conditions = self.conditioning(quantized.vectors.to(self.dtype))  # (B, N, D)
        if cfg.decoder_condition_context == "prefix":
            cond, cond_mask = conditions, mask  # groups 0…g of each image; the condition network is causal
        else:
            rows = torch.arange(batch, device=self.device)
            cond, cond_mask = conditions.view(batch, cfg.num_steps, tps, -1)[rows, groups], None
        data = scale_images(images, cfg.data_scale)
        noise = randn_tensor(data.shape, generator=generator, device=self.device, dtype=data.dtype)
        x_t = interpolate(noise, data, s)
        estimate = None if self.regressor is None else self._regress(conditions, mask)  # groups 0…g
        fed = estimate if cfg.decoder_estimate_input else None
        out = self.decoder(
            x_t, s, cond, return_repa=repa_target is not None, cond_mask=cond_mask, estimate=fed
        )
        losses = TokenizerLosses(
            flow=flow_matching_loss(out.velocity, velocity_target(noise, data), cfg.data_scale),
            vq=quantized.loss,
            perceptual_weight=perceptual_weight,
            repa_weight=repa_weight,
            groups=groups,
        )
        if estimate is not None:
            losses.regression, losses.regression_weight = F.mse_loss(estimate, images), cfg.regression_weight
            if cfg.regression_all_groups:
                losses.regression = losses.regression + F.mse_loss(self._regress(conditions), images)
        if perceptual_loss is not None:
            reconstruction = clean_estimate(x_t, out.velocity, s) / cfg.data_scale
            losses.perceptual = perceptual_loss(images, reconstruction).mean()
        if repa_target is not None:
            losses.repa = repa_loss(out.repa_features, repa_target(images))
        return losses
