"""DART's non-Markovian noise process: level variances, (cumulative) SNRs, independent noising, loss weights.

Implements DART (Gu et al. 2025) §3 "forward process" and the loss weighting discussion of reference dart.md §2.
Level t ∈ {1, …, T} holds x_t = √γ_t · x_0 + √(1 − γ_t) · ε_t with a FRESH ε_t per level, γ_1 > … > γ_T = 0
(level T is pure noise). Tensors indexed by level hold level t at index t − 1 (cleanest first); the model's
sequence puts the noisiest level first (see :mod:`dart.sequence`).

Independent Gaussian views of x_0 add their signal-to-noise ratios, so the levels x_t … x_T together tell as
much about x_0 as one view with the *cumulative* SNR Γ_t = Σ_{τ≥t} γ_τ / (1 − γ_τ) (:func:`cumulative_snr`,
:func:`gaussian_posterior_mean`). Γ_t, not γ_t, sets how hard level t's x_0 prediction is.

Schedules (:func:`level_gammas`), on the level grid s_t = shift(t / T) ∈ (0, 1]:

- ``"per_level_cosine"``: γ_t = cos²(π s_t / 2), the community's choice; the default, because it is the one a
  community run trained successfully with uniform weighting (dart.md §2) and it needs no target curve.
- ``"cumulative_cosine"`` / ``"cumulative_flow"``: Γ_t follows a standard schedule's SNR at s_t (cosine
  cot²(π s / 2), rectified flow ((1 − s)/s)²); SNR_t = Γ_t − Γ_{t+1} and γ_t = SNR_t / (1 + SNR_t). Then the
  last prediction (level 1) is as hard as the last step of a T-step sampler on that standard schedule. Both
  reach Γ_T = 0, so level T is pure noise here too.

Loss weights (:func:`loss_weights`, normalised to mean 1 over the levels so the loss scale does not depend on
the choice): ``"uniform"`` x_0-MSE (default); ``"clipped_cumulative_snr"`` min(1 + Γ_t, c) (the +1 keeps the
pure-noise level trained, the clip keeps the clean levels from dominating); ``"cumulative_snr"`` Γ_t, the
paper's example, kept for the ablation only: it gives level T weight 0 and at T = 4 puts 84 / 14 / 2 / 0 % of
the weight on levels 1…4; a community run with it failed where uniform weighting worked (dart.md §2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LevelSchedule",
    "NoisedLevels",
    "cumulative_snr",
    "gaussian_posterior_mean",
    "level_gammas",
    "loss_weights",
    "noise_levels",
    "shift_time",
    "snr",
]


def shift_time(s: Tensor, shift: float) -> Tensor:
    """Time shift s ↦ shift·s / (1 + (shift − 1)·s) on [0, 1] (identity for shift = 1; > 1 moves towards noise)."""
    return shift * s / (1 + (shift - 1) * s)


def level_gammas(kind: str, num_levels: int, shift: float = 1.0) -> Tensor:
    """Signal variances γ_t of the T levels.

    Args:
        kind: ``"per_level_cosine"``, ``"cumulative_cosine"`` or ``"cumulative_flow"`` (module docstring).
        num_levels: T ≥ 2.
        shift: time shift of the level grid s_t = shift(t / T).

    Returns:
        (T,) float64, index t − 1 = γ_t, strictly decreasing, in [0, 1), with γ_T = 0 exactly.

    Raises:
        ValueError: for an unknown kind, or a target whose SNR differences are not decreasing.
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be ≥ 2, got {num_levels}.")
    grid = torch.arange(1, num_levels + 1, dtype=torch.float64, device="cpu") / num_levels
    s = shift_time(grid, shift)  # (T,) in (0, 1], always on CPU (also under a meta-device context)
    if kind == "per_level_cosine":
        gammas = torch.cos(math.pi * s / 2) ** 2
    elif kind in ("cumulative_cosine", "cumulative_flow"):
        if kind == "cumulative_cosine":
            target = 1 / torch.tan(math.pi * s / 2) ** 2  # cot²(πs/2): SNR of α̅(s) = cos²(πs/2)
        else:
            target = ((1 - s) / s) ** 2  # x_s = (1 − s)·x_0 + s·ε
        target[-1] = 0.0  # s_T = 1: pure noise
        per_level = target - torch.cat([target[1:], target.new_zeros(1)])  # SNR_t = Γ_t − Γ_{t+1}
        gammas = per_level / (1 + per_level)
    else:
        raise ValueError(
            f"schedule must be 'per_level_cosine', 'cumulative_cosine' or 'cumulative_flow', got {kind!r}."
        )
    gammas[-1] = 0.0  # cos(π/2)² is 3.7e-33 in floating point; level T is pure noise by construction
    if not bool((gammas[:-1] > gammas[1:]).all()) or not bool((gammas[:-1] < 1).all()):
        raise ValueError(
            f"schedule {kind!r} with T={num_levels}, shift={shift} gives signal variances {gammas.tolist()}, "
            "which are not strictly decreasing in [0, 1); use another shift or schedule."
        )
    return gammas


def snr(gammas: Tensor) -> Tensor:
    """Per-level SNR γ_t / (1 − γ_t); 0 for the pure-noise level. Same shape and dtype as ``gammas``."""
    return gammas / (1 - gammas)


def cumulative_snr(gammas: Tensor) -> Tensor:
    """Γ_t = Σ_{τ ≥ t} SNR_τ: the SNR of the single Gaussian view of x_0 equivalent to x_t … x_T.

    Args:
        gammas: (T,) signal variances, index t − 1 = level t.

    Returns:
        (T,) non-increasing, Γ_T = SNR_T (0 for a pure-noise level T).
    """
    return snr(gammas).flip(0).cumsum(0).flip(0)


def loss_weights(kind: str, gammas: Tensor, clip: float = 5.0) -> Tensor:
    """Per-level loss weights ω_t, normalised to mean 1 (module docstring).

    Args:
        kind: ``"uniform"``, ``"clipped_cumulative_snr"`` (min(1 + Γ_t, clip)) or ``"cumulative_snr"`` (Γ_t).
        gammas: (T,) signal variances.
        clip: the clip c of ``"clipped_cumulative_snr"``.

    Returns:
        (T,) float64 weights with mean 1 (index t − 1 = level t).
    """
    big_gamma = cumulative_snr(gammas.double())
    if kind == "uniform":
        weights = torch.ones_like(big_gamma)
    elif kind == "clipped_cumulative_snr":
        weights = (1 + big_gamma).clamp(max=clip)
    elif kind == "cumulative_snr":
        weights = big_gamma
    else:
        raise ValueError(
            f"loss_weighting must be 'uniform', 'clipped_cumulative_snr' or 'cumulative_snr', got {kind!r}."
        )
    return weights / weights.mean()


@dataclass(frozen=True)
class LevelSchedule:
    """The process quantities of one configuration, all (T,) float64 with index t − 1 = level t.

    Attributes:
        gammas: signal variances γ_t (γ_T = 0).
        snr: per-level SNR_t.
        cumulative_snr: Γ_t.
        loss_weights: ω_t (mean 1).
    """

    gammas: Tensor
    snr: Tensor
    cumulative_snr: Tensor
    loss_weights: Tensor

    @classmethod
    def from_config(cls, config) -> LevelSchedule:
        """The schedule of a :class:`dart.DARTConfig` (``schedule``, ``schedule_shift``, ``loss_weighting``)."""
        gammas = level_gammas(config.schedule, config.num_levels, config.schedule_shift)
        return cls(
            gammas=gammas,
            snr=snr(gammas),
            cumulative_snr=cumulative_snr(gammas),
            loss_weights=loss_weights(config.loss_weighting, gammas, config.loss_weight_clip),
        )

    @property
    def num_levels(self) -> int:
        return self.gammas.shape[0]


@dataclass
class NoisedLevels:
    """All T noisy views of one batch.

    Attributes:
        noisy: (B, T, *shape) x_t = √γ_t x_0 + √(1 − γ_t) ε_t; index t − 1 = level t.
        noise: (B, T, *shape) the ε_t, independent across levels and elements.
    """

    noisy: Tensor
    noise: Tensor


def noise_levels(x0: Tensor, gammas: Tensor, generator: torch.Generator | None = None) -> NoisedLevels:
    """Noise ``x0`` independently at every level, with fresh noise per level (paper: q(x_t | x_0) per t).

    Args:
        x0: (B, *shape) clean samples, any float dtype.
        gammas: (T,) signal variances.
        generator: ``torch.Generator`` for the noise (on ``x0``'s device, or on CPU).

    Returns:
        :class:`NoisedLevels` with (B, T, *shape) tensors in ``x0``'s dtype and device.
    """
    from diffusers.utils.torch_utils import randn_tensor

    batch, shape = x0.shape[0], tuple(x0.shape[1:])
    num_levels = gammas.shape[0]
    noise = randn_tensor((batch, num_levels, *shape), generator=generator, device=x0.device, dtype=x0.dtype)
    view = (1, num_levels) + (1,) * len(shape)
    signal = gammas.to(device=x0.device, dtype=torch.float64).sqrt().to(x0.dtype).view(view)
    sigma = (1 - gammas.to(device=x0.device, dtype=torch.float64)).sqrt().to(x0.dtype).view(view)
    return NoisedLevels(noisy=signal * x0[:, None] + sigma * noise, noise=noise)


def gaussian_posterior_mean(
    noisy: Tensor, gammas: Tensor, level: int, prior_mean: float = 0.0, prior_var: float = 1.0
) -> Tensor:
    """E[x_0 | x_t … x_T] in closed form for a Gaussian data distribution x_0 ~ N(m, v·I).

    The observations reduce to one sufficient statistic with SNR Γ_t:
    y = Σ_{τ≥t} (√γ_τ / (1 − γ_τ)) · x_τ / Γ_t ~ N(x_0, I / Γ_t), so the posterior mean is
    m + (v Γ_t / (1 + v Γ_t)) · (y − m) and the posterior variance v / (1 + v Γ_t). It is the optimal x_0
    predictor of level t on such data (its MSE is the floor of the per-level loss) and it shows that only Γ_t
    matters.

    Args:
        noisy: (B, T, *shape) all levels, index t − 1 = level t (as :func:`noise_levels` returns).
        gammas: (T,) signal variances.
        level: t in 1 … T.
        prior_mean: m.
        prior_var: v > 0.

    Returns:
        (B, *shape) posterior means, in ``noisy``'s dtype.
    """
    num_levels = gammas.shape[0]
    if not 1 <= level <= num_levels:
        raise ValueError(f"level must be in 1 … {num_levels}, got {level}.")
    g = gammas.double().to(noisy.device)
    weights = (g.sqrt() / (1 - g))[level - 1 :]  # (T − t + 1,)
    big_gamma = float(cumulative_snr(g)[level - 1])
    view = (1, -1) + (1,) * (noisy.dim() - 2)
    observed = noisy.double()[:, level - 1 :]
    # Σ_τ (√γ_τ/(1−γ_τ))·x_τ = Γ_t·y; posterior mean = m + v/(1 + vΓ)·(Γ·y − Γ·m)
    weighted = (weights.view(view) * observed).sum(1)
    mean = prior_mean + prior_var / (1 + prior_var * big_gamma) * (weighted - big_gamma * prior_mean)
    return mean.to(noisy.dtype)
