"""tokenizer.kernels: the oneDNN linear path gives the codes, conditions and pixels of the plain path."""

import pytest
import torch
import torch.nn.functional as F
from tiny import random_images

from tokenizer.kernels import OneDNNLinearMode, linear_kernels, onednn_available

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 12), (12,)])
def test_mode_equals_f_linear_and_leaves_gradients_alone(shape):
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(12, 20)
    x = torch.randn(*shape, generator=generator, requires_grad=True)
    with OneDNNLinearMode():
        with torch.no_grad():
            fast = layer(x)
        out = layer(x)  # needs a gradient: plain F.linear
    torch.testing.assert_close(fast, F.linear(x, layer.weight, layer.bias).detach())
    out.sum().backward()
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand_as(x))


def test_linear_kernels_is_a_no_op_off_the_cpu_or_when_disabled():
    assert not isinstance(linear_kernels(False, "cpu"), OneDNNLinearMode)
    assert not isinstance(linear_kernels(True, "meta"), OneDNNLinearMode)
    assert isinstance(linear_kernels(True, "cpu"), OneDNNLinearMode) == onednn_available()


@needs_onednn
def test_fast_linear_encode_and_decode_equal_the_plain_path(tiny):
    images = random_images(2, tiny.config.image_size)
    noise = torch.randn(
        2, 3, tiny.config.image_size, tiny.config.image_size, generator=torch.Generator().manual_seed(1)
    )
    out = {}
    for fast in (True, False):
        tiny.fast_linear = fast
        with linear_kernels(fast, "cpu"), torch.no_grad():
            features = tiny.encoder(images)
        codes = tiny.encode(images)
        steps = list(tiny.stream(codes, noise=noise))
        out[fast] = features, codes, [s.preview for s in steps], steps[-1].sample
    assert torch.equal(out[True][1], out[False][1])
    torch.testing.assert_close(out[True][0], out[False][0])
    torch.testing.assert_close(out[True][2], out[False][2])
    torch.testing.assert_close(out[True][3], out[False][3])
    # randomised weights: the velocity is not zero, so the kernels were really compared
    assert (out[True][3] - noise / tiny.config.data_scale).abs().max() > 0.1
