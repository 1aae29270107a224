"""Input checks of the tokenizer's verbs: images and codes, with errors that name the fix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokenizer.config import TokenizerConfig

IMAGE_RANGE_TOLERANCE = 1e-3

__all__ = ["IMAGE_RANGE_TOLERANCE", "check_codes", "check_images"]


def check_images(images: Any, cfg: TokenizerConfig) -> Tensor:
    """``images`` as (B, 3, S, S) finite floats in [-1, 1] (a little overshoot tolerated), else an error."""
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
    return images


def check_codes(codes: Any, cfg: TokenizerConfig, *, whole_groups: bool = True) -> Tensor:
    """``codes`` as a (B, n) int64 tensor in [0, codebook_size) — n a whole number of groups unless told not."""
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


def check_noise(noise: Any, cfg: TokenizerConfig) -> Tensor:
    """A decoder starting noise x₀ given by the caller: a finite float (B, 3, image_size, image_size) tensor."""
    shape = (3, cfg.image_size, cfg.image_size)
    if not isinstance(noise, Tensor) or noise.ndim != 4 or tuple(noise.shape[1:]) != shape:
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a (B, {shape[0]}, {shape[1]}, {shape[2]}) tensor, got {got}")
    if not noise.is_floating_point() or not torch.isfinite(noise).all():
        raise ValueError("noise must be a finite float tensor (it contains NaN/inf or is not float)")
    return noise
