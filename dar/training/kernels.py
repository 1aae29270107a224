"""oneDNN matrix products for training on CPU: a ``TorchFunctionMode`` that runs ``F.linear`` with its gradients.

The demo recipes spend ~60 % of a CPU training step in ``F.linear`` and its two backward products. PyTorch
sends fp32 CPU products to MKL, which on some hosts (measured on an AMD EPYC) runs them at well under half the
speed of oneDNN, the other BLAS-like library inside every x86 PyTorch build. :class:`TrainingLinearMode`
reroutes ``F.linear`` on fp32 CPU tensors through :class:`OneDNNLinear`, an autograd function whose forward and
input-gradient products (y = x·Wᵀ + b, ∂x = ∂y·W) run through oneDNN; ∂W = ∂yᵀ·x stays with ``torch.mm``. Modules, parameters and checkpoints
are unchanged; results equal ``F.linear`` up to float summation order. The recipes enable it with
``train.fast_linear`` (default on; it is a no-op off the CPU or without oneDNN).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["OneDNNLinear", "TrainingLinearMode", "onednn_available", "training_kernels"]


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear kernel (x86 and aarch64 builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` with the forward and the input-gradient products through oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        grad_2d = grad_out.reshape(-1, grad_out.shape[-1])  # (rows, out)
        if ctx.needs_input_grad[0]:
            grad_x = _mm(grad_out, weight.t().contiguous())  # (…, out)·(out, in)
        if ctx.needs_input_grad[1]:
            # (out, rows)·(rows, in) through torch.mm: BLAS takes the transposed operand as it is, where oneDNN
            # would need a copy of x in the other layout (measured slower than the product it saves)
            grad_w = torch.mm(grad_2d.t(), x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b


class TrainingLinearMode(TorchFunctionMode):
    """Within this mode, ``F.linear`` on fp32 CPU tensors runs as :class:`OneDNNLinear` (with gradients)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if (
                x.device.type == "cpu"
                and x.dtype == weight.dtype == torch.float32
                and weight.dim() == 2
                and x.dim() >= 2
                and (bias is None or bias.dtype == torch.float32)
            ):
                return OneDNNLinear.apply(x, weight, bias)
        return func(*args, **kwargs)


def training_kernels(enabled: bool, device: torch.device | str) -> contextlib.AbstractContextManager:
    """:class:`TrainingLinearMode` when ``enabled``, the device is the CPU and oneDNN exists; else a no-op."""
    if enabled and torch.device(device).type == "cpu" and onednn_available():
        return TrainingLinearMode()
    return contextlib.nullcontext()
