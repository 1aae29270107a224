"""ODE steps of the tokenizer's decoder and the record of one streamed decoding step.

Implements the samplers of D-AR (Gao & Shou 2025) §3.2 / Table 2 as described in reference §2.9: Euler, and the
official "adams2" step that uses the fixed Adams–Bashforth-2 weights 1.5 / −0.5 on the current and previous
velocities even though the step sizes vary (step 0 is Euler). Both are reproduced exactly, as trained and
evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from torch import Tensor


class Sampler(str, Enum):
    """Which ODE step :meth:`tokenizer.DARTokenizer.stream` takes."""

    EULER = "euler"
    ADAMS2 = "adams2"


def euler_step(x: Tensor, velocity: Tensor, t: Tensor | float, t_next: Tensor | float) -> Tensor:
    """x + (t_next − t)·v.

    Args:
        x: (B, C, H, W) sample at time t.
        velocity: (B, C, H, W) velocity evaluated at (x, t).
        t: current time (0-dim tensor or float).
        t_next: next time.

    Returns:
        (B, C, H, W) sample at t_next.
    """
    return x + (t_next - t) * velocity


def adams2_step(
    x: Tensor,
    velocity: Tensor,
    previous_velocity: Tensor | None,
    t: Tensor | float,
    t_next: Tensor | float,
) -> Tensor:
    """Official fixed-weight Adams–Bashforth-2 step: x + Δ·(1.5·v − 0.5·v_prev); Euler when there is no v_prev.

    Args:
        x: (B, C, H, W) sample at time t.
        velocity: (B, C, H, W) velocity at (x, t).
        previous_velocity: velocity of the previous step, or None at the first step.
        t: current time.
        t_next: next time.

    Returns:
        (B, C, H, W) sample at t_next.
    """
    if previous_velocity is None:
        return euler_step(x, velocity, t, t_next)
    return x + (t_next - t) * (1.5 * velocity - 0.5 * previous_velocity)


def sampler_step(
    sampler: Sampler | str,
    x: Tensor,
    velocity: Tensor,
    previous_velocity: Tensor | None,
    t: Tensor | float,
    t_next: Tensor | float,
) -> Tensor:
    """Dispatch to :func:`euler_step` or :func:`adams2_step` by ``sampler``."""
    sampler = Sampler(sampler)
    if sampler is Sampler.EULER:
        return euler_step(x, velocity, t, t_next)
    return adams2_step(x, velocity, previous_velocity, t, t_next)


@dataclass
class DecodeStep:
    """One step of :meth:`tokenizer.DARTokenizer.stream`.

    Attributes:
        index: step index i (0-based); group i of the codes was used.
        t: time s_i at which the velocity was evaluated.
        t_next: time the sample was moved to (1.0 after the last step).
        codes: (B, (i + 1)·tokens_per_step) int64, every code consumed so far.
        sample: (B, 3, H, W) float, the sample after this step in image units (divided by data_scale); after
            the last step it is the decoded image (not clamped).
        preview: (B, 3, H, W) float, the clean-image estimate (x_t + (1 − t)·v) / data_scale from this step.
    """

    index: int
    t: float
    t_next: float
    codes: Tensor
    sample: Tensor
    preview: Tensor
