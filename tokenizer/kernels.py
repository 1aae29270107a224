"""A faster CPU kernel for the tokenizer's linear layers at inference, without touching the modules or weights.

The tokenizer's work is matrix products: one ``tokenizer_v1`` decoder step is ~330 GFLOP, 88 % of it in
``nn.Linear`` layers over 1024 image tokens. PyTorch's ``F.linear`` on fp32 CPU tensors goes to MKL, which on
some hosts (measured on an AMD EPYC) runs these products at well under half the speed of oneDNN, the other
BLAS-like library inside every x86 PyTorch build (the one ``torch.compile`` uses for CPU linears).

:class:`OneDNNLinearMode` is a ``TorchFunctionMode`` that reroutes ``F.linear`` calls on fp32 CPU tensors that
need no gradient through oneDNN (``torch.ops.mkldnn._linear_pointwise``); anything else runs unchanged.
:meth:`tokenizer.DARTokenizer.encode` and the decode steps enable it when ``DARTokenizer.fast_linear`` is true
(the default); set it to False for the plain kernels. Training never sees it (it needs gradients). Results equal
``F.linear`` up to float summation order (~1e-6 relative).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["OneDNNLinearMode", "linear_kernels", "onednn_available"]


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear kernel (x86 and aarch64 builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDNNLinearMode(TorchFunctionMode):
    """Within this mode, ``F.linear`` on fp32 CPU tensors that need no gradient runs through oneDNN."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if (
                x.device.type == "cpu"
                and x.dtype == weight.dtype == torch.float32
                and weight.dim() == 2
                and x.dim() >= 1
                and (bias is None or bias.dtype == torch.float32)
                and not (
                    torch.is_grad_enabled()
                    and any(t is not None and t.requires_grad for t in (x, weight, bias))
                )
            ):
                return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return func(*args, **kwargs)


def linear_kernels(enabled: bool, device: torch.device | str) -> contextlib.AbstractContextManager:
    """:class:`OneDNNLinearMode` when ``enabled``, the device is the CPU and oneDNN exists; else a no-op context."""
    if enabled and torch.device(device).type == "cpu" and onednn_available():
        return OneDNNLinearMode()
    return contextlib.nullcontext()
