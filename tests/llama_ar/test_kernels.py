"""llama_ar.kernels: the rerouted linear equals F.linear, and the sampler uses it only inside its steps."""

import pytest
import torch
import torch.nn.functional as F

from llama_ar import iter_code_groups, kernels, sample_codes
from llama_ar.kernels import _REORDERED, SkinnyLinearMode, onednn_available, onednn_linear, skinny_linear


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


@pytest.mark.parametrize("shape", [(3, 8), (2, 3, 8), (40, 8), (8,)])
@pytest.mark.parametrize("pack", [True, False])
def test_mode_equals_f_linear_without_gradient(shape, pack):
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(*shape, generator=generator)
    expected = layer(x).detach()
    with torch.no_grad(), SkinnyLinearMode(max_rows=4, pack_weights=pack) as mode:
        out = layer(x)
        again = layer(x)  # a reordered weight is reused
        with torch.no_grad():
            layer.weight.mul_(2.0)  # in-place change: reordered again
        changed = layer(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(again, expected)
    torch.testing.assert_close(changed, F.linear(x, layer.weight.detach(), layer.bias.detach()))
    if mode.onednn and pack and x.numel() // 8 <= 4:
        assert layer.weight in _REORDERED
    else:
        assert layer.weight not in _REORDERED


def test_mode_keeps_gradients_and_other_dtypes():
    layer = torch.nn.Linear(8, 4)
    small = torch.randn(3, 8, requires_grad=True)
    with SkinnyLinearMode(max_rows=4):
        out = layer(small)  # needs a gradient: plain F.linear
        double = layer.double()(small.detach().double())  # fp64: plain F.linear
    assert layer.weight not in _REORDERED
    layer.float()
    out.sum().backward()
    expected = torch.autograd.grad(F.linear(small, layer.weight, layer.bias).sum(), small)[0]
    torch.testing.assert_close(small.grad, expected)
    assert double.dtype == torch.float64
    with pytest.raises(ValueError, match="max_rows"):
        SkinnyLinearMode(0)


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
def test_onednn_linear_equals_f_linear():
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*s, generator=generator) for s in ((2, 5, 12), (20, 12), (20,)))
    torch.testing.assert_close(onednn_linear(x, weight, bias), F.linear(x, weight, bias))
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, 10)
    torch.testing.assert_close(onednn_linear(x, packed, bias), F.linear(x, weight, bias))


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
    expected = fast is None and kernels.fast_linear_default(torch.device("cpu"), torch.float32)
    assert during == [expected] * 16  # None = auto: the CPU vendor's rule for an fp32 CPU model


@pytest.mark.parametrize(
    ("vendor", "device", "dtype", "expected"),
    [
        ("AuthenticAMD", "cpu", torch.float32, True),
        (None, "cpu", torch.float32, True),
        ("GenuineIntel", "cpu", torch.float32, False),  # MKL is as fast on Intel's own CPUs
        ("AuthenticAMD", "cpu", torch.bfloat16, False),
        ("AuthenticAMD", "meta", torch.float32, False),
    ],
)
def test_fast_linear_default_follows_the_cpu_vendor(monkeypatch, vendor, device, dtype, expected):
    monkeypatch.setattr(kernels, "cpu_vendor", lambda: vendor)
    assert kernels.fast_linear_default(torch.device(device), dtype) is expected


def test_the_sampler_resolves_fast_linear_none_by_the_vendor_rule(monkeypatch, tiny_model):
    for vendor, expected in (("GenuineIntel", False), ("AuthenticAMD", True)):
        monkeypatch.setattr(kernels, "cpu_vendor", lambda vendor=vendor: vendor)
        during = []
        list(
            iter_code_groups(
                tiny_model,
                [0],
                4,
                2,
                generator=torch.Generator().manual_seed(0),
                logits_callback=lambda k, logits, during=during: during.append(skinny_mode_active()),
            )
        )
        assert during == [expected] * 4, vendor
