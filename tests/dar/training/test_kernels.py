"""dar.training.kernels: the oneDNN linear gives F.linear's outputs and gradients, and a training step's result."""

import pytest
import torch
import torch.nn.functional as F

from dar.training.kernels import OneDNNLinear, TrainingLinearMode, onednn_available, training_kernels

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 12)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_linear_equals_f_linear_with_gradients(shape, with_bias):
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(*shape, generator=generator), torch.randn(20, 12, generator=generator)]
    tensors.append(torch.randn(20, generator=generator) if with_bias else None)
    grad = torch.randn(*shape[:-1], 20, generator=generator)
    results = []
    for fn in (OneDNNLinear.apply, F.linear):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
        out = fn(*leaves)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in leaves if t is not None])
    for fast, plain in zip(*results):
        torch.testing.assert_close(fast, plain)


def test_mode_reroutes_fp32_cpu_linears_only():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    with TrainingLinearMode():
        out = layer(x)
        double = layer.double()(x.detach().double())
    assert out.grad_fn.name() == "OneDNNLinearBackward"
    assert double.grad_fn.name() != "OneDNNLinearBackward"  # fp64: plain F.linear
    assert not isinstance(training_kernels(False, "cpu"), TrainingLinearMode)
    assert not isinstance(training_kernels(True, "meta"), TrainingLinearMode)


def test_a_training_step_through_the_mode_equals_the_plain_step():
    def step(fast: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        data = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            with training_kernels(fast, "cpu"):
                loss = model(data).square().mean()
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return [p.detach() for p in model.parameters()]

    for fast, plain in zip(step(True), step(False)):
        torch.testing.assert_close(fast, plain)
