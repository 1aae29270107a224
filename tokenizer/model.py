"""`DARTokenizer`: the sequential diffusion tokenizer of D-AR with its public verbs.

Implements D-AR (Gao & Shou 2025) §3 (reference §2–§3, §5.3–5.4): ``encode`` images into N discrete codes
ordered coarse to fine, ``stream`` / ``decode`` codes back to pixels with a K-step flow-matching sampler where
step k is conditioned on code group k, and ``training_losses`` for training. ``decode`` is ``stream`` run to
the end, so the two cannot drift apart. Saved and loaded through diffusers (``config.json`` +
``diffusion_pytorch_model.safetensors``) with strict key matching.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from tokenizer.conditioning import ConditionNetwork
from tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig
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
from tokenizer.losses import PerceptualLoss, RepaTarget, TokenizerLosses, flow_matching_loss, repa_loss
from tokenizer.quantizer import VectorQuantizer
from tokenizer.sampler import DecodeStep, Sampler, sampler_step

logger = logging.getLogger(__name__)

IMAGE_RANGE_TOLERANCE = 1e-3


def _takes_config_fields(init):
    """Give ``__init__(self, **fields)`` the explicit keyword signature of :class:`TokenizerConfig`.

    diffusers' ``register_to_config`` and ``from_config`` read the init signature to know which config keys to
    record and pass; this keeps the defaults in one place (the dataclass).
    """
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in fields(TokenizerConfig)
    ]
    init.__signature__ = inspect.Signature(params)
    return init


class DARTokenizer(ModelMixin, ConfigMixin):
    """Sequential diffusion tokenizer: encoder + cosine VQ + causal condition network + pixel flow decoder.

    Build with ``DARTokenizer.from_preset("tokenizer_v1")`` (or ``"demo"``, ``"tiny"``), with
    ``DARTokenizer(**TokenizerConfig(...).to_dict())``, or load with ``DARTokenizer.from_pretrained(folder)``.
    ``tok.config`` is the :class:`~tokenizer.config.TokenizerConfig` (diffusers' raw dict is ``tok._internal_dict``).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    @_takes_config_fields
    def __init__(self, **config_fields: Any) -> None:
        super().__init__()
        config = TokenizerConfig.from_dict(config_fields)
        self._tokenizer_config = config
        self.register_to_config(**config.to_dict())  # records resolved values (e.g. position_table_size)
        self.encoder = TokenEncoder(config)
        self.quantizer = VectorQuantizer(config)
        self.conditioning = ConditionNetwork(config)
        self.decoder = PixelDecoder(config)

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
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> DARTokenizer:
        """Load a saved tokenizer strictly: a missing, unexpected or mis-shaped weight raises ``ValueError``.

        Args:
            pretrained_model_name_or_path: folder written by ``save_pretrained`` (or a hub id).
            **kwargs: passed on to diffusers' ``ModelMixin.from_pretrained`` (e.g. ``subfolder``).
        """
        path = os.fspath(pretrained_model_name_or_path)
        if (os.path.isabs(path) or path.startswith((".", "~"))) and not os.path.isdir(
            os.path.expanduser(path)
        ):
            raise FileNotFoundError(f"no tokenizer folder at {path} (expected config.json + *.safetensors)")
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, output_loading_info=True, **kwargs
            )
        except RuntimeError as error:  # torch's load_state_dict size-mismatch report
            raise ValueError(f"cannot load {pretrained_model_name_or_path}: {error}") from error
        problems = {
            k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        problems = {k: v for k, v in problems.items() if v}
        if problems or info.get("error_msgs"):
            details = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in problems.items())
            errors = f"; errors: {info['error_msgs']}" if info.get("error_msgs") else ""
            raise ValueError(
                f"weights in {pretrained_model_name_or_path} do not match the DARTokenizer built from its config "
                f"({details}{errors}); was the folder written by a different configuration or version?"
            )
        return (model, info) if want_info else model

    # ------------------------------------------------------------------ validation

    def _check_images(self, images: Any) -> Tensor:
        cfg = self.config
        expected = f"(B, 3, {cfg.image_size}, {cfg.image_size}) float images in [-1, 1]"
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor {expected}, got {type(images).__name__}")
        if not images.is_floating_point():
            raise ValueError(
                f"images must be a floating tensor {expected}, got dtype {images.dtype}; "
                "convert uint8 images with images.float() / 127.5 - 1"
            )
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(f"images must have shape {expected}, got {tuple(images.shape)}")
        if images.numel() and not torch.isfinite(images).all():
            raise ValueError(f"images contain NaN or infinite values; expected {expected}")
        if images.numel() and images.detach().abs().max() > 1 + IMAGE_RANGE_TOLERANCE:
            lo, hi = float(images.min()), float(images.max())
            raise ValueError(f"images must lie in [-1, 1] ({expected}), got values in [{lo:.3g}, {hi:.3g}]")
        return images.to(self.dtype)

    def _check_codes(self, codes: Any, *, whole_groups: bool = True) -> Tensor:
        cfg = self.config
        if not isinstance(codes, Tensor):
            raise TypeError(f"codes must be a torch.Tensor of shape (B, n) int64, got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor (int64), got dtype {codes.dtype}")
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise ValueError(f"codes must have shape (B, n) with B ≥ 1, got {tuple(codes.shape)}")
        n, tps = codes.shape[1], cfg.tokens_per_step
        if whole_groups and (n == 0 or n % tps or n > cfg.num_tokens):
            raise ValueError(
                f"codes must hold a whole number of groups of {tps} codes, at most {cfg.num_tokens} "
                f"({cfg.num_steps} groups); got {n} codes"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.codebook_size):
            raise ValueError(
                f"codes must lie in [0, {cfg.codebook_size}), got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.long()

    # ------------------------------------------------------------------ public verbs

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images → codes.

        Args:
            images: (B, 3, image_size, image_size) float in [-1, 1].

        Returns:
            (B, num_tokens) int64 codes in [0, codebook_size); code i depends only on the image and queries ≤ i.
        """
        images = self._check_images(images)
        return self.quantizer.codes(self.encoder(images))

    def conditions(self, codes: Tensor) -> Tensor:
        """Codes (B, n), n ≤ num_tokens → conditions (B, n, condition_dim); causal, so any prefix is valid."""
        codes = self._check_codes(codes, whole_groups=False)
        return self.conditioning(self.quantizer.lookup(codes).to(self.dtype))

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
            shape = (3, cfg.image_size, cfg.image_size)
            if not isinstance(noise, Tensor) or noise.ndim != 4 or tuple(noise.shape[1:]) != shape:
                got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
                raise ValueError(f"noise must be a (B, {shape[0]}, {shape[1]}, {shape[2]}) tensor, got {got}")
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

    def _initial_noise(self, batch: int, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
        size = self.config.image_size
        if noise is None:
            return randn_tensor(
                (batch, 3, size, size), generator=generator, device=self.device, dtype=self.dtype
            )
        if noise.shape[0] != batch:
            raise ValueError(f"noise has batch size {noise.shape[0]} but the codes have {batch}")
        return noise.to(device=self.device, dtype=self.dtype)

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
        cond = self.conditioning(self.quantizer.lookup(codes).to(x.dtype))[:, index * tps :]  # (B, tps, D)
        t, t_next = times[index], times[index + 1]
        velocity = self.decoder(x, t.expand(x.shape[0]), cond).velocity
        preview = clean_estimate(x, velocity, t) / self.config.data_scale
        x_next = sampler_step(sampler, x, velocity, previous_velocity, t, t_next)
        return x_next, velocity, preview

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
        quantized = self.quantizer.quantize(self.encoder(images), mask=mask)
        cond = self.conditioning(quantized.vectors.to(self.dtype))  # (B, N, D)
        cond = cond.view(batch, cfg.num_steps, tps, -1)[torch.arange(batch, device=self.device), groups]
        data = scale_images(images, cfg.data_scale)
        noise = randn_tensor(data.shape, generator=generator, device=self.device, dtype=data.dtype)
        x_t = interpolate(noise, data, s)
        out = self.decoder(x_t, s, cond, return_repa=repa_target is not None)
        losses = TokenizerLosses(
            flow=flow_matching_loss(out.velocity, velocity_target(noise, data), cfg.data_scale),
            vq=quantized.loss,
            perceptual_weight=perceptual_weight,
            repa_weight=repa_weight,
            groups=groups,
            codebook_usage=self._codebook_usage(quantized.codes),
        )
        if perceptual_loss is not None:
            reconstruction = clean_estimate(x_t, out.velocity, s) / cfg.data_scale
            losses.perceptual = perceptual_loss(images, reconstruction).mean()
        if repa_target is not None:
            losses.repa = repa_loss(out.repa_features, repa_target(images))
        return losses

    def _codebook_usage(self, codes: Tensor) -> Tensor:
        valid = codes[codes >= 0]
        return torch.tensor(valid.unique().numel() / self.config.codebook_size)
