"""A faster CPU kernel choice for the decode loop's skinny matrix products, without touching the model.

During KV-cached decoding every linear layer multiplies a handful of rows (B, or 2B with guidance) by a large
weight: the step is bound by reading the weights. On the CPU builds we use, ``F.linear(x, W)`` (``x·Wᵀ``) reads
them markedly slower than the same product computed as ``(W·xᵀ)ᵀ`` (``make bench`` reports the effect on whole
sampling runs, ``fast_linear`` on and off, in the same run).

:class:`SkinnyLinearMode` is a ``TorchFunctionMode`` that reroutes ``F.linear`` calls with at most ``max_rows``
rows of fp32 CPU input through ``torch.mm(W, xᵀ)``; everything else runs unchanged. The model's classes,
parameters and saved files are untouched, so it stays a stock ``LlamaForCausalLM``; the sampler enables the mode
only while it computes a group (see :func:`llama_ar.iter_code_groups`, ``fast_linear``). Results equal
``F.linear`` up to float summation order (~1e-6 relative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["SkinnyLinearMode", "skinny_linear"]


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(weight · x₂ᵀ)ᵀ`` with x flattened to 2-D; contiguous output."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features but weight expects {weight.shape[-1]}.")
    rows = x.reshape(-1, x.shape[-1])
    out = torch.mm(weight, rows.t()).t().contiguous()
    if bias is not None:
        out = out.add_(bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class SkinnyLinearMode(TorchFunctionMode):
    """Within this mode, ``F.linear`` on fp32 CPU inputs of at most ``max_rows`` rows runs as :func:`skinny_linear`.

    Args:
        max_rows: Largest number of input rows (product of the leading dimensions) that is rerouted; the gain
            shrinks as rows grow.
    """

    def __init__(self, max_rows: int = 32):
        super().__init__()
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive int, got {max_rows!r}.")
        self.max_rows = max_rows

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if (
                x.device.type == "cpu"
                and x.dtype == weight.dtype == torch.float32
                and x.dim() >= 1
                and x.numel() <= self.max_rows * x.shape[-1]
            ):
                return skinny_linear(x, weight, bias)
        return func(*args, **kwargs)
