"""The non-Markovian forward process: schedules, cumulative SNR, noising statistics, loss weights, the Gaussian toy."""

import math

import pytest
import torch

from dart.schedule import (
    LevelSchedule,
    cumulative_snr,
    gaussian_posterior_mean,
    level_gammas,
    loss_weights,
    noise_levels,
    snr,
)

KINDS = ("per_level_cosine", "cumulative_cosine", "cumulative_flow")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_levels", [2, 4, 16])
def test_gammas_decrease_to_pure_noise(kind, num_levels):
    gammas = level_gammas(kind, num_levels)
    assert gammas.shape == (num_levels,) and gammas.dtype == torch.float64
    assert bool((gammas[:-1] > gammas[1:]).all()) and gammas[-1] == 0.0 and gammas[0] < 1
    big_gamma = cumulative_snr(gammas)
    assert big_gamma[-1] == 0.0 and bool((big_gamma[:-1] > big_gamma[1:]).all())


def test_per_level_cosine_formula():
    t = torch.arange(1, 9, dtype=torch.float64)
    expected = torch.cos(math.pi * t / 16) ** 2
    expected[-1] = 0.0
    torch.testing.assert_close(level_gammas("per_level_cosine", 8), expected)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_cumulative_schedules_trace_their_target(shift):
    s = torch.arange(1, 9, dtype=torch.float64) / 8
    s = shift * s / (1 + (shift - 1) * s)
    targets = {
        "cumulative_cosine": 1 / torch.tan(math.pi * s / 2) ** 2,
        "cumulative_flow": ((1 - s) / s) ** 2,
    }
    for kind, target in targets.items():
        target[-1] = 0.0
        torch.testing.assert_close(cumulative_snr(level_gammas(kind, 8, shift)), target)


def test_cumulative_snr_sums_the_cleaner_side():
    gammas = torch.tensor([0.9, 0.5, 0.2, 0.0], dtype=torch.float64)
    per_level = torch.tensor([9.0, 1.0, 0.25, 0.0], dtype=torch.float64)
    torch.testing.assert_close(snr(gammas), per_level)
    torch.testing.assert_close(
        cumulative_snr(gammas), torch.tensor([10.25, 1.25, 0.25, 0.0], dtype=torch.float64)
    )


def test_loss_weights():
    gammas = level_gammas("per_level_cosine", 4)
    torch.testing.assert_close(loss_weights("uniform", gammas), torch.ones(4, dtype=torch.float64))
    # the paper's example Γ_t: 84 / 14 / 2 / 0 % at T = 4 (dart.md §2) — why it is not the default
    share = loss_weights("cumulative_snr", gammas) / 4
    assert [round(float(v), 2) for v in share] == [0.84, 0.14, 0.02, 0.0]
    clipped = loss_weights("clipped_cumulative_snr", gammas, clip=5.0)
    raw = (1 + cumulative_snr(gammas)).clamp(max=5.0)
    torch.testing.assert_close(clipped, raw / raw.mean())
    assert clipped[-1] > 0 and clipped.mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss_weighting"):
        loss_weights("snr", gammas)


def test_schedule_from_config_is_consistent():
    from dart import DART_PRESETS

    schedule = LevelSchedule.from_config(DART_PRESETS["tiny"].replace(schedule="cumulative_flow"))
    assert schedule.num_levels == 4
    torch.testing.assert_close(schedule.cumulative_snr, cumulative_snr(schedule.gammas))


def test_forward_process_statistics():
    """Every level has mean √γ_t x_0 and variance 1 − γ_t, and the noises of two levels are uncorrelated."""
    gammas = level_gammas("per_level_cosine", 4)
    x0 = torch.linspace(-1, 1, 6)  # one sample with 6 values
    n = 40_000
    noised = noise_levels(x0.expand(n, -1), gammas, torch.Generator().manual_seed(0))
    assert noised.noisy.shape == (n, 4, 6)
    mean, var = noised.noisy.mean(0), noised.noisy.var(0)  # (T, 6)
    g = gammas.float()[:, None]
    se_mean = (1 - g).sqrt() / math.sqrt(n)  # standard errors; 5 σ bounds
    assert bool(((mean - g.sqrt() * x0).abs() <= 5 * se_mean + 1e-6).all())
    assert bool(((var - (1 - g)).abs() <= 5 * (1 - g) * math.sqrt(2 / n) + 1e-6).all())
    eps = noised.noise.permute(1, 0, 2).reshape(4, -1)  # (T, n·6)
    corr = torch.corrcoef(eps)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / math.sqrt(eps.shape[1])
    # the noisy views are the declared mixture of x_0 and the noise
    torch.testing.assert_close(noised.noisy, g.sqrt() * x0 + (1 - g).sqrt() * noised.noise)


def test_noising_is_reproducible_and_fresh_per_level():
    gammas = level_gammas("per_level_cosine", 4)
    x0 = torch.zeros(2, 3)
    a = noise_levels(x0, gammas, torch.Generator().manual_seed(5)).noise
    b = noise_levels(x0, gammas, torch.Generator().manual_seed(5)).noise
    assert torch.equal(a, b)
    assert not torch.equal(a[:, 0], a[:, 1])


def test_gaussian_posterior_matches_monte_carlo():
    """The closed-form E[x_0 | x_t … x_T] (through Γ_t) equals least squares on Monte Carlo samples."""
    gammas = level_gammas("per_level_cosine", 6)
    prior_var, n = 0.5, 200_000
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 1, generator=generator, dtype=torch.float64) * math.sqrt(prior_var)
    noisy = noise_levels(x0, gammas, generator).noisy  # (n, T, 1)
    for level in (1, 3, 5, 6):
        closed = gaussian_posterior_mean(noisy, gammas, level, prior_var=prior_var)  # (n, 1)
        observed = noisy[:, level - 1 :, 0]  # (n, T − t + 1)
        coefficients = torch.linalg.lstsq(observed, x0).solution  # MC regression of x_0 on the observations
        mc = observed @ coefficients
        big_gamma = float(cumulative_snr(gammas)[level - 1])
        bayes_mse = prior_var / (1 + prior_var * big_gamma)
        assert float((closed - x0).pow(2).mean()) == pytest.approx(bayes_mse, rel=0.02)
        assert float((closed - mc).pow(2).mean()) < 1e-3 * prior_var
    # with nothing but noise (level T), the best guess is the prior mean
    assert torch.equal(
        gaussian_posterior_mean(noisy, gammas, 6, prior_mean=0.25),
        torch.full((n, 1), 0.25, dtype=torch.float64),
    )
