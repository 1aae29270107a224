"""Flow-matching process of the tokenizer: data scaling, time shift, code groups, sampling times.

Implements D-AR (Gao & Shou 2025) §3.2 as described in reference §2.8. Convention: t = 0 is pure noise, t = 1 is
data. Data x₁ = data_scale · image, noise x₀ ~ N(0, I), path x_s = s·x₁ + (1 − s)·x₀, target velocity x₁ − x₀.
Training draws u ~ U[0, 1) per sample; the network sees the shifted time s = u / (u + β(1 − u)) and the
conditions of group g = min(⌊K·u + 0.5⌋, K − 1) (round half up, from the *unshifted* u). Sampling evaluates step
i at s_i = shift(i / K) with group i, and finishes at 1.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shift_time(u: Tensor, time_shift: float) -> Tensor:
    """Time shift s = u / (u + β(1 − u)); β > 1 moves samples towards the noise end.

    Args:
        u: float tensor of times in [0, 1], any shape.
        time_shift: β > 0.

    Returns:
        Tensor of the same shape and dtype, in [0, 1].
    """
    return u / (u + time_shift * (1 - u))


def group_of_u(u: Tensor, num_groups: int) -> Tensor:
    """Condition group used in training for unshifted time u: min(⌊K·u + 0.5⌋, K − 1).

    Args:
        u: (B,) float times in [0, 1).
        num_groups: K.

    Returns:
        (B,) int64 group indices in [0, K).
    """
    return torch.floor(u * num_groups + 0.5).long().clamp(max=num_groups - 1)


def sampling_times(
    num_groups: int,
    num_steps: int,
    time_shift: float,
    device: torch.device | str | None = None,
) -> Tensor:
    """Evaluation times of a decode that uses ``num_groups`` groups: shift(i / num_steps) for i < num_groups, then 1.

    With num_groups < num_steps the last step jumps from s_{num_groups−1} straight to 1 (the official
    ``clip_steps`` preview). Computed in float32 as in the official sampler.

    Args:
        num_groups: number of steps actually taken, 1 ≤ num_groups ≤ num_steps.
        num_steps: K of the configuration (the grid the groups were trained on).
        time_shift: β.
        device: where to put the result.

    Returns:
        (num_groups + 1,) float32 tensor, increasing from 0 to 1.
    """
    if not 1 <= num_groups <= num_steps:
        raise ValueError(f"num_groups must be in [1, {num_steps}], got {num_groups}")
    u = torch.tensor([i / num_steps for i in range(num_groups)] + [1.0], dtype=torch.float32, device=device)
    return shift_time(u, time_shift)


def scale_images(images: Tensor, data_scale: float) -> Tensor:
    """Images in [-1, 1] → flow data x₁ = data_scale · images."""
    return images * data_scale


def interpolate(noise: Tensor, data: Tensor, s: Tensor) -> Tensor:
    """Point on the straight path x_s = s·x₁ + (1 − s)·x₀.

    Args:
        noise: (B, C, H, W) x₀.
        data: (B, C, H, W) x₁.
        s: (B,) shifted times.

    Returns:
        (B, C, H, W).
    """
    s = s.view(-1, *([1] * (data.ndim - 1)))
    return s * data + (1.0 - s) * noise


def velocity_target(noise: Tensor, data: Tensor) -> Tensor:
    """Flow-matching regression target x₁ − x₀."""
    return data - noise


def clean_estimate(x_t: Tensor, velocity: Tensor, s: Tensor | float) -> Tensor:
    """One-jump estimate of the data, x̂₁ = x_s + (1 − s)·v (scaled units).

    Args:
        x_t: (B, C, H, W) current sample.
        velocity: (B, C, H, W) predicted velocity at s.
        s: (B,) times, a 0-dim tensor or a float.

    Returns:
        (B, C, H, W).
    """
    if isinstance(s, Tensor) and s.ndim == 1:
        s = s.view(-1, *([1] * (x_t.ndim - 1)))
    return x_t + (1.0 - s) * velocity
