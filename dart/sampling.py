"""DART sampling: KV-cached level-by-level (or, for DART-AR, token-by-token) decoding with batched CFG.

Implements the sampler of DART (Gu et al. 2025) §3 / reference dart.md §1: start from pure noise x_T, predict
x̂_0 from everything fed so far, re-noise it to the next level with FRESH noise,
x_{t−1} = √γ_{t−1} · x̂_0 + √(1 − γ_{t−1}) · ε, append that block, repeat; the last x̂_0 is the sample. No ODE /
SDE solver is needed, and every x̂_0 on the way is a preview (:class:`LevelStep`, one per level, like
``llama_ar.iter_code_groups`` yields code groups).

- Classifier-free guidance: conditional and null-class rows run in ONE forward (2B rows) and are mixed on x̂_0,
  x̂ = x̂_u + w·(x̂_c − x̂_u) (DART-FM: on the flow head's velocity); w is constant or a linear ramp over the
  levels (:func:`guidance_scales`). Both halves receive the same (guided) re-noised block.
- ``use_cache=True`` feeds each new block once into a ``transformers.DynamicCache`` passed as ``cache=``;
  ``use_cache=False`` is the reference path that re-runs the whole sequence for every block. They draw the same
  random numbers in the same order, so their outputs agree to float tolerance (tested).
- DART-AR samples T·K tokens one at a time (each token's x̂_0 is predicted from all earlier tokens and re-noised
  to its own level at once); DART-FM samples each level's K tokens with the flow head.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from dart.sequence import patchify, unpatchify

__all__ = ["LevelStep", "guidance_scales", "iter_levels", "sample"]

MAX_CFG_SCALE = 1000.0  # the bound of D-AR's SamplingOptions


@dataclass
class LevelStep:
    """One finished level of sampling.

    Attributes:
        index: sampling step, 0 … T − 1 (0 is the pure-noise level).
        level: t = T − index.
        x0: (B, C, S, S) the guided clean estimate x̂_0 read from level t (model space; clipped to [-1, 1] when
            ``clip_denoised``); the next level is made from it, and after the last level it is the sample.
        noisy: (B, C, S, S) the level-t input x_t that was fed.
        cfg_scale: guidance scale used at this level.
    """

    index: int
    level: int
    x0: Tensor
    noisy: Tensor
    cfg_scale: float


def guidance_scales(
    num_levels: int,
    cfg_scale: float = 4.0,
    cfg_schedule: Literal["constant", "linear"] = "constant",
    cfg_scale_start: float = 1.0,
) -> Tensor:
    """Guidance scale per sampling step.

    Args:
        num_levels: T.
        cfg_scale: the constant scale, or the last (cleanest) level's scale of a linear ramp.
        cfg_schedule: ``"constant"`` or ``"linear"`` (``linspace(cfg_scale_start, cfg_scale, T)``, noisiest first).
        cfg_scale_start: first scale of the linear ramp.

    Returns:
        (T,) float32, index = sampling step (0 = level T).
    """
    values = []
    for name, value in (("cfg_scale", cfg_scale), ("cfg_scale_start", cfg_scale_start)):
        if (
            isinstance(value, (bool, str, bytes))
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"{name} must be a finite real number, got {value!r}; for a ramp pass cfg_schedule='linear' with "
                "cfg_scale_start and cfg_scale."
            )
        if not 0.0 <= value <= MAX_CFG_SCALE:
            raise ValueError(
                f"{name} must lie in [0, {MAX_CFG_SCALE:g}], got {value}: larger scales only overflow x̂_0."
            )
        values.append(float(value))
    if cfg_schedule == "constant":
        return torch.full((num_levels,), values[0], dtype=torch.float32)
    if cfg_schedule == "linear":
        return torch.linspace(values[1], values[0], num_levels, dtype=torch.float32)
    raise ValueError(f"cfg_schedule must be 'constant' or 'linear', got {cfg_schedule!r}.")


def iter_levels(
    model,
    class_labels: Tensor | Sequence[int] | int,
    *,
    cfg_scale: float = 4.0,
    cfg_schedule: Literal["constant", "linear"] = "constant",
    cfg_scale_start: float = 1.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    use_cache: bool = True,
    clip_denoised: bool | None = None,
) -> Iterator[LevelStep]:
    """Sample and yield a :class:`LevelStep` after every level, noisiest first.

    Arguments are validated at the call. Each step runs in eval mode under ``torch.inference_mode``; the
    caller's module modes and grad mode are restored before the step is yielded.

    Args:
        model: a :class:`dart.DARTModel` (any variant).
        class_labels: (B,) class ids in [0, num_classes) (tensor, list or int).
        cfg_scale: guidance scale (constant) or the end of the linear ramp; a constant 1 runs B rows only.
        cfg_schedule: ``"constant"`` or ``"linear"`` over levels (:func:`guidance_scales`).
        cfg_scale_start: first scale of the linear ramp.
        generator: ``torch.Generator`` for the starting noise, the re-noising and the flow head.
        noise: optional (B, C, S, S) starting level x_T in model space instead of drawing it.
        use_cache: KV-cached decoding (default) or the uncached reference path.
        clip_denoised: clip x̂_0 to [-1, 1] before re-noising; ``None`` = on in pixel space, off for latents.

    Yields:
        T :class:`LevelStep` (T·K model calls for DART-AR, T for DART and DART-FM); the last one's ``x0`` is
        the sample.
    """
    cfg = model.config
    labels = model.check_labels(class_labels, allow_null=False)
    scales = guidance_scales(cfg.num_levels, cfg_scale, cfg_schedule, cfg_scale_start).tolist()
    guided = any(s != 1.0 for s in scales)
    batch = labels.shape[0]
    shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    if noise is None:
        x_top = randn_tensor(shape, generator=generator, device=model.device, dtype=model.dtype)
    else:
        if not isinstance(noise, Tensor) or tuple(noise.shape) != shape:
            got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"noise must be a {shape} tensor (the starting level x_T), got {got}.")
        if not noise.is_floating_point() or not torch.isfinite(noise).all():
            raise ValueError("noise must be finite float values (it holds NaN/inf or integers).")
        x_top = noise.to(device=model.device, dtype=model.dtype)
    clip = (cfg.space == "pixel") if clip_denoised is None else bool(clip_denoised)
    rows = torch.cat([labels, torch.full_like(labels, cfg.null_class)]) if guided else labels
    run = _token_levels if cfg.variant == "dart_ar" else _block_levels
    inner = run(
        model, rows, batch, patchify(x_top, cfg.patch_size), scales, guided, generator, use_cache, clip
    )
    return _run_in_inference_mode(model, inner)


def sample(model, class_labels, **kwargs) -> Tensor:
    """The last :class:`LevelStep`'s ``x0``: (B, C, S, S) samples in model space (same arguments as
    :func:`iter_levels`)."""
    x0 = None
    for step in iter_levels(model, class_labels, **kwargs):
        x0 = step.x0
    return x0


def _new_cache(model, use_cache: bool):
    if not use_cache:
        return None
    from transformers import DynamicCache

    return DynamicCache(config=model.backbone.config)


def _renoise(x0: Tensor, gamma: float, noise: Tensor) -> Tensor:
    """x_t = √γ_t · x̂_0 + √(1 − γ_t) · ε."""
    return math.sqrt(gamma) * x0 + math.sqrt(1.0 - gamma) * noise


def _guided_x0(
    model, hidden: Tensor, batch: int, guided: bool, scale: float, generator, clip: bool
) -> Tensor:
    uncond = hidden[batch:] if guided else None
    x0 = model.sample_x0(hidden[:batch], uncond_hidden=uncond, cfg_scale=scale, generator=generator)
    return x0.clamp(-1, 1) if clip else x0


def _block_levels(
    model, rows, batch, x_tokens, scales, guided, generator, use_cache, clip
) -> Iterator[LevelStep]:
    """DART / DART-FM: one backbone call per level (K new tokens)."""
    cfg, layout = model.config, model.layout
    gammas = model.schedule.gammas.tolist()
    k, num_rows = cfg.tokens_per_level, rows.shape[0]
    cache = _new_cache(model, use_cache)
    fed: list[Tensor] = []  # the blocks fed so far (rows, K, D), for the uncached path
    for index in range(cfg.num_levels):
        level = cfg.num_levels - index
        block = x_tokens.repeat(num_rows // batch, 1, 1)  # same tokens for conditional and null rows
        fed.append(block)
        if cache is not None:
            embeds = model.embed_tokens(block, layout.level_start(level))
            start = layout.level_start(level)
            if index == 0:
                embeds, start = torch.cat([model.embed_class(rows), embeds], dim=1), 0
            hidden = model.backbone_hidden(embeds, start, cache)[:, -k:]
        else:
            embeds = torch.cat([model.embed_class(rows), model.embed_tokens(torch.cat(fed, dim=1), 1)], dim=1)
            hidden = model.backbone_hidden(embeds, 0)[:, -k:]
        x0 = _guided_x0(model, hidden, batch, guided, scales[index], generator, clip)  # (B, K, D)
        yield LevelStep(
            index=index,
            level=level,
            x0=unpatchify(x0, cfg.patch_size, cfg.in_channels),
            noisy=unpatchify(x_tokens, cfg.patch_size, cfg.in_channels),
            cfg_scale=scales[index],
        )
        if level > 1:
            fresh = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_tokens = _renoise(x0, gammas[level - 2], fresh)


def _token_levels(
    model, rows, batch, x_top, scales, guided, generator, use_cache, clip
) -> Iterator[LevelStep]:
    """DART-AR: T·K backbone calls of one token; hidden state j predicts full-sequence token j + 1."""
    cfg = model.config
    gammas = model.schedule.gammas.tolist()
    k, num_rows, total = cfg.tokens_per_level, rows.shape[0], cfg.num_levels * cfg.tokens_per_level
    cache = _new_cache(model, use_cache)
    class_embed = model.embed_class(rows)  # (rows, 1, d)
    fed = torch.empty(num_rows, 0, cfg.token_dim, device=x_top.device, dtype=x_top.dtype)
    hidden = model.backbone_hidden(class_embed, 0, cache)[:, -1:]  # predicts token 0 (level T, patch 0)
    for j in range(total):
        index, patch = divmod(j, k)
        level = cfg.num_levels - index
        if patch == 0:
            level_noise = (
                x_top
                if index == 0
                else randn_tensor(x_top.shape, generator=generator, device=x_top.device, dtype=x_top.dtype)
            )
            x0_level, x_level = torch.empty_like(x_top), torch.empty_like(x_top)
        x0 = _guided_x0(model, hidden, batch, guided, scales[index], generator, clip)  # (B, 1, D)
        x0_level[:, patch : patch + 1] = x0
        x_level[:, patch : patch + 1] = _renoise(x0, gammas[level - 1], level_noise[:, patch : patch + 1])
        if patch == k - 1:
            yield LevelStep(
                index=index,
                level=level,
                x0=unpatchify(x0_level, cfg.patch_size, cfg.in_channels),
                noisy=unpatchify(x_level, cfg.patch_size, cfg.in_channels),
                cfg_scale=scales[index],
            )
        if j + 1 == total:
            break
        token = x_level[:, patch : patch + 1].repeat(num_rows // batch, 1, 1)  # (rows, 1, D)
        fed = torch.cat([fed, token], dim=1)
        if cache is not None:
            hidden = model.backbone_hidden(model.embed_tokens(token, j + 1), j + 1, cache)[:, -1:]
        else:
            embeds = torch.cat([class_embed, model.embed_tokens(fed, 1)], dim=1)
            hidden = model.backbone_hidden(embeds, 0)[:, -1:]


def _run_in_inference_mode(model, inner: Iterator[LevelStep]) -> Iterator[LevelStep]:
    """Drive ``inner`` in eval mode + ``torch.inference_mode`` one step at a time, restoring the caller's
    module modes (and grad mode) before each step is handed back."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        while True:
            model.eval()
            try:
                with torch.inference_mode():
                    step = next(inner)
            except StopIteration:
                return
            finally:
                for module, training in modes:
                    module.training = training
            yield LevelStep(step.index, step.level, step.x0.clone(), step.noisy.clone(), step.cfg_scale)
    finally:
        inner.close()
