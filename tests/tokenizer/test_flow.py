"""Tests of tokenizer/flow.py: time shift, sampling times, group of u, path and target."""

import pytest
import torch

from tokenizer.flow import (
    clean_estimate,
    group_of_u,
    interpolate,
    sampling_times,
    scale_images,
    shift_time,
    velocity_target,
)


def test_sampling_times_beta2_eight_steps():
    times = sampling_times(8, 8, 2.0)
    expected = [0.0, 0.0667, 0.1429, 0.2308, 0.3333, 0.4545, 0.6, 0.7778, 1.0]
    assert times.dtype == torch.float32
    torch.testing.assert_close(times, torch.tensor(expected), atol=1e-4, rtol=0)  # 4-decimal reference table
    for i in range(8):
        assert abs(times[i].item() - (i / 8) / (2 - i / 8)) < 1e-6


def test_partial_grids_jump_to_one():
    torch.testing.assert_close(sampling_times(3, 8, 2.0), sampling_times(8, 8, 2.0)[[0, 1, 2, 8]])
    with pytest.raises(ValueError, match="num_groups"):
        sampling_times(0, 8, 2.0)
    with pytest.raises(ValueError, match="num_groups"):
        sampling_times(9, 8, 2.0)


def test_shift_time_endpoints_and_beta_one_identity():
    u = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_time(u, 1.0), u)
    s = shift_time(u, 2.0)
    assert s[0] == 0 and s[-1] == 1 and (s[1:-1] < u[1:-1]).all()


def test_group_of_u_rounds_half_up_with_boundaries_at_odd_sixteenths():
    eps = 1e-4
    boundaries = [1 / 16, 3 / 16, 5 / 16, 7 / 16, 9 / 16, 11 / 16, 13 / 16]
    for g, b in enumerate(boundaries):
        below, at = torch.tensor([b - eps]), torch.tensor([b])
        assert group_of_u(below, 8).item() == g
        assert group_of_u(at, 8).item() == g + 1
    u = torch.tensor([0.0, 0.5, 0.9, 0.999999])
    assert group_of_u(u, 8).tolist() == [0, 4, 7, 7]
    assert group_of_u(u, 8).dtype == torch.int64


def test_path_target_and_clean_estimate_are_consistent():
    noise, images = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4) * 2 - 1
    data = scale_images(images, 0.6)
    s = torch.tensor([0.0, 0.3])
    x_t = interpolate(noise, data, s)
    torch.testing.assert_close(x_t[0], noise[0])
    v = velocity_target(noise, data)
    torch.testing.assert_close(clean_estimate(x_t, v, s), data)
    torch.testing.assert_close(clean_estimate(x_t[1:], v[1:], 0.3), data[1:])
