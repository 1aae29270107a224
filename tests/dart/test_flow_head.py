"""DART-FM's flow head: the two output parameterisations mean the same velocity field."""

import pytest
import torch

from dart.flow_head import MIN_ONE_MINUS_S, FlowHead


def _head(prediction: str, constant: torch.Tensor) -> FlowHead:
    """A head whose output layer ignores its input and returns ``constant``."""
    torch.manual_seed(0)
    head = FlowHead(token_dim=constant.numel(), cond_dim=8, width=16, depth=2, prediction=prediction)
    with torch.no_grad():
        head.output.weight.zero_()
        head.output.bias.copy_(constant)
    return head


def test_x0_output_is_turned_into_the_velocity_towards_it():
    c = torch.linspace(-1, 1, 6)
    head = _head("x0", c)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.0, 0.3, 0.9, 0.97, 1.0])
    velocity = head(x, s, torch.randn(5, 8))
    expected = (c - x) / (1 - s).clamp_min(MIN_ONE_MINUS_S)[:, None]
    torch.testing.assert_close(velocity, expected)
    # the one-jump estimate x_s + (1 − s)·v is the head's x̂_0 wherever 1 − s is above the clip
    torch.testing.assert_close((x + (1 - s)[:, None] * velocity)[:3], c.expand(3, -1))


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_euler_sampling_of_a_constant_x0_head_lands_on_it(steps):
    c = torch.linspace(-1, 1, 6)
    head = _head("x0", c)
    out = head.sample(torch.randn(7, 8), steps, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, c.expand(7, -1))


def test_velocity_output_is_returned_as_is():
    c = torch.linspace(-1, 1, 6)
    head = _head("velocity", c)
    velocity = head(torch.randn(3, 6), torch.rand(3), torch.randn(3, 8))
    torch.testing.assert_close(velocity, c.expand(3, -1))


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="'velocity' or 'x0'"):
        FlowHead(token_dim=4, cond_dim=4, width=8, depth=1, prediction="eps")
