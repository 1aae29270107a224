"""llama_ar.kernels: the rerouted skinny linear equals F.linear, and the sampler uses it only inside its steps."""

import pytest
import torch
import torch.nn.functional as F

from llama_ar import iter_code_groups, sample_codes
from llama_ar.kernels import SkinnyLinearMode, skinny_linear


@pytest.mark.parametrize("shape", [(5, 12), (2, 3, 12), (12,)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_skinny_linear_equals_f_linear(shape, with_bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    weight = torch.randn(20, 12, generator=generator)
    bias = torch.randn(20, generator=generator) if with_bias else None
    out = skinny_linear(x, weight, bias)
    assert out.shape == F.linear(x, weight, bias).shape and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, bias))
    with pytest.raises(ValueError, match="features"):
        skinny_linear(torch.randn(2, 11), weight)


class CountingMode(SkinnyLinearMode):
    def __init__(self, max_rows=32):
        super().__init__(max_rows)
        self.rerouted = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            x = args[0]
            self.rerouted += x.dtype == torch.float32 and x.numel() <= self.max_rows * x.shape[-1]
        return super().__torch_function__(func, types, args, kwargs)


def test_mode_reroutes_only_small_fp32_inputs_and_keeps_gradients():
    layer = torch.nn.Linear(8, 4)
    small, large = torch.randn(3, 8, requires_grad=True), torch.randn(40, 8)
    with CountingMode(max_rows=4) as mode:
        out = layer(small)
        layer(large)  # 40 rows > 4: plain F.linear
        layer.double()(small.detach().double())  # fp64: plain F.linear
    assert mode.rerouted == 1
    layer.float()
    out.sum().backward()
    expected = torch.autograd.grad(F.linear(small, layer.weight, layer.bias).sum(), small)[0]
    torch.testing.assert_close(small.grad, expected)
    with pytest.raises(ValueError, match="max_rows"):
        SkinnyLinearMode(0)


def test_fast_linear_gives_the_codes_and_logits_of_the_plain_path(tiny_model, layout):
    logits = {True: [], False: []}
    codes = {
        fast: sample_codes(
            tiny_model,
            [1, 2],
            16,
            cfg_scale=3.0,
            top_k=1,
            fast_linear=fast,
            logits_callback=lambda k, x, fast=fast: logits[fast].append(x.clone()),
        )
        for fast in (True, False)
    }
    assert torch.equal(codes[True], codes[False])
    # default fp32 tolerance per branch, carried through the CFG mix uncond + 3·(cond − uncond) (factor 1 + 2·3)
    torch.testing.assert_close(torch.stack(logits[True]), torch.stack(logits[False]), atol=7e-5, rtol=1e-5)


def skinny_mode_active():
    from torch.overrides import _get_current_function_mode_stack

    return any(isinstance(mode, SkinnyLinearMode) for mode in _get_current_function_mode_stack())


@pytest.mark.parametrize("fast", [None, False])
def test_the_mode_is_on_during_steps_and_off_between_groups(tiny_model, fast):
    during = []
    groups = iter_code_groups(
        tiny_model,
        [0],
        16,
        4,
        generator=torch.Generator().manual_seed(0),
        fast_linear=fast,
        logits_callback=lambda k, logits: during.append(skinny_mode_active()),
    )
    between = [skinny_mode_active() for _ in groups]
    assert between == [False] * 4
    assert during == [fast is None] * 16  # None = auto: on for an fp32 CPU model
