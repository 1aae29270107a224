"""Tests of tokenizer/sampler.py: Euler and the official fixed-weight Adams–Bashforth-2 step."""

import pytest
import torch

from tokenizer.sampler import Sampler, adams2_step, euler_step, sampler_step


def test_euler_step():
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(euler_step(x, v, 0.2, 0.5), x + 0.3 * v)


def test_adams2_first_step_is_euler_then_fixed_weights():
    x, v, v_prev = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    t, t_next = torch.tensor(0.1429), torch.tensor(0.2308)
    torch.testing.assert_close(adams2_step(x, v, None, t, t_next), euler_step(x, v, t, t_next))
    dt = t_next - t
    torch.testing.assert_close(adams2_step(x, v, v_prev, t, t_next), x + dt * (1.5 * v - 0.5 * v_prev))
    assert not torch.allclose(adams2_step(x, v, v_prev, t, t_next), euler_step(x, v, t, t_next))


def test_adams2_is_exact_for_linear_velocity_on_a_uniform_grid():
    # dx/dt = a + b·t: AB2 with fixed weights is exact on a uniform grid once started exactly.
    a, b, h = 0.7, -1.3, 0.1
    x_prev_v = a + b * 0.0
    x = torch.tensor(0.0 + a * h + b * h * h / 2)
    v = torch.tensor(a + b * h)
    x_next = adams2_step(x, v, torch.tensor(x_prev_v), h, 2 * h)
    exact = a * 2 * h + b * (2 * h) ** 2 / 2
    assert abs(x_next.item() - exact) < 1e-6


def test_dispatch_and_enum():
    x, v, v_prev = torch.randn(3), torch.randn(3), torch.randn(3)
    torch.testing.assert_close(sampler_step("euler", x, v, v_prev, 0.0, 0.5), euler_step(x, v, 0.0, 0.5))
    torch.testing.assert_close(
        sampler_step(Sampler.ADAMS2, x, v, v_prev, 0.0, 0.5), adams2_step(x, v, v_prev, 0.0, 0.5)
    )
    with pytest.raises(ValueError):
        sampler_step("heun", x, v, v_prev, 0.0, 0.5)
