"""Validating what a generation call is given: counts, layout references, noise; and one validated request.

Shared by the verbs of :class:`dar.pipeline.DARPipeline`. Every check raises an error that names the argument
and the fix; inputs are accepted in the forms diffusers users pass them (numpy ints and arrays, PIL images).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from llama_ar.options import SamplingOptions

__all__ = ["GenerationRequest", "check_generator", "check_noise", "int_in_range", "reference_tensor"]


def int_in_range(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound when ``high`` is None), else ``ValueError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
        or (high and value > high)
    ):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}.")
    return int(value)


def reference_tensor(layout: Any) -> torch.Tensor:
    """A layout reference as a tensor: (B, 3, H, W) float images in [-1, 1], or (B, N) int64 codes.

    Accepts float images in [-1, 1], uint8 images (tensor or (B, )H, W, 3 array), PIL images, and codes (1-D or
    2-D integer tensors or arrays).
    """
    from PIL import Image

    from dar.images import to_8bit

    if isinstance(layout, Image.Image):
        layout = [layout]
    if isinstance(layout, (list, tuple)) and layout and all(isinstance(v, Image.Image) for v in layout):
        layout = np.stack([np.asarray(to_8bit(v).convert("RGB")) for v in layout])
    if isinstance(layout, np.ndarray):
        if layout.ndim in (3, 4) and layout.shape[-1] == 3 and layout.dtype == np.uint8:
            layout = np.moveaxis(layout if layout.ndim == 4 else layout[None], -1, 1)  # NHWC → NCHW
        layout = torch.from_numpy(np.ascontiguousarray(layout))
    if not isinstance(layout, torch.Tensor):
        raise TypeError(
            f"layout must be reference images (tensor, PIL, uint8 array) or codes, got {type(layout).__name__}"
        )
    if layout.ndim == 3 and layout.shape[0] == 3:  # one (3, H, W) image
        layout = layout[None]
    if layout.ndim == 4 and layout.dtype == torch.uint8:
        return layout.float() / 127.5 - 1
    if layout.ndim == 4 and layout.is_floating_point():
        return layout
    if layout.ndim in (1, 2) and not layout.is_floating_point() and layout.dtype != torch.bool:
        return (layout[None] if layout.ndim == 1 else layout).long()
    raise ValueError(
        f"layout must be images (B, 3, H, W; float in [-1, 1] or uint8) or codes (B, N), got a {layout.dtype} tensor "
        f"of shape {tuple(layout.shape)}."
    )


def check_generator(generator: Any, batch: int, device: torch.device) -> None:
    """None, one ``torch.Generator`` or a list of ``batch`` of them, on ``device``'s type; else an error saying so."""
    if isinstance(generator, list):
        if len(generator) != batch:
            raise ValueError(
                f"got {len(generator)} generators for {batch} images: pass one per image, or one"
            )
        if not all(isinstance(g, torch.Generator) for g in generator):
            kinds = sorted({type(g).__name__ for g in generator})
            raise TypeError(f"a list of generators must hold torch.Generator objects only, got {kinds}")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (or a list of them), got {type(generator).__name__}: pass "
            "torch.Generator().manual_seed(seed)"
        )
    for g in generator if isinstance(generator, list) else [generator]:
        if g is not None and g.device.type != torch.device(device).type:
            raise ValueError(
                f"generator is on {g.device} but the pipeline runs on {device}: create it with "
                f"torch.Generator('{torch.device(device).type}')"
            )


def check_noise(noise: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Initial noise as a finite float tensor of ``shape`` (a numpy array is accepted), or None."""
    if noise is None:
        return None
    noise = torch.from_numpy(noise) if isinstance(noise, np.ndarray) else noise
    if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != tuple(shape):
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape {tuple(shape)}, got {got}.")
    if not noise.is_floating_point() or not torch.isfinite(noise).all():
        raise ValueError("noise must be a finite float tensor (it holds NaN/inf or integers).")
    return noise


@dataclass(frozen=True)
class GenerationRequest:
    """One validated generation call of the D-AR pipeline (labels already repeated per image)."""

    labels: torch.Tensor
    options: SamplingOptions
    num_groups: int
    num_tokens: int
    tokens_per_step: int
    prefix: torch.Tensor | None
    noise: torch.Tensor | None
    generator: Any
    output_type: str
    noise_scale: float | None = None  # of drawn decoder noise; None: the tokenizer's config.noise_scale

    @property
    def batch(self) -> int:
        return len(self.labels)

    def split(self, size: int) -> Iterator[GenerationRequest]:
        """Consecutive sub-requests of at most ``size`` images (a list of generators is split with them)."""
        for start in range(0, self.batch, size):
            part = slice(start, start + size)
            yield replace(
                self,
                labels=self.labels[part],
                prefix=None if self.prefix is None else self.prefix[part],
                noise=None if self.noise is None else self.noise[part],
                generator=self.generator[part] if isinstance(self.generator, list) else self.generator,
            )
