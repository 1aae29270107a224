"""A faster CPU kernel choice for the decode loop's skinny matrix products, without touching the model.

During KV-cached decoding every linear layer multiplies a handful of rows (B, or 2B with guidance) by a large
weight: the step is bound by reading the weights. PyTorch's ``F.linear`` on fp32 CPU tensors goes to MKL, which
on some hosts (measured on an AMD EPYC) reaches well under half of the memory bandwidth for such products;
oneDNN (shipped inside every x86 PyTorch build, the library ``torch.compile`` itself uses for CPU linears) does
better, and better still with the weight reordered once into its blocked layout for the row count of a step.

:class:`SkinnyLinearMode` is a ``TorchFunctionMode`` that reroutes ``F.linear`` calls on fp32 CPU tensors that
need no gradient through oneDNN (``torch.ops.mkldnn._linear_pointwise``), with the weights of inputs of at most
``max_rows`` rows reordered once (for that row count) and the reordered copy kept while the weight lives. Without oneDNN in the torch build,
inputs of at most ``max_rows`` rows are computed as ``(W·xᵀ)ᵀ`` (:func:`skinny_linear`) instead. The model's
classes, parameters and saved files are untouched, so it stays a stock ``LlamaForCausalLM``; the sampler
enables it only while it computes a group (see :func:`llama_ar.iter_code_groups`,
``fast_linear``). Results equal ``F.linear`` up to float summation order (~1e-6 relative).

Whether it pays depends on the CPU: MKL is Intel's library and tuned for Intel's cores, where it matches oneDNN
on these products or beats it (one or two rows); on other x86 CPUs it is the slower of the two. The sampler's
default (:func:`fast_linear_default`) follows the CPU vendor, never a timing, so a given host always computes
the same products in the same way.
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "SkinnyLinearMode",
    "cpu_vendor",
    "fast_linear_default",
    "onednn_available",
    "onednn_linear",
    "skinny_linear",
]

_REORDERED: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""weight → (its ``_version``, row count, oneDNN copy); an entry goes when its weight is freed."""


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear kernel (x86 and aarch64 builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def cpu_vendor() -> str | None:
    """The CPU vendor string (``"GenuineIntel"``, ``"AuthenticAMD"``, …), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    processor = platform.processor()  # e.g. "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel" on Windows
    for vendor in ("GenuineIntel", "AuthenticAMD"):
        if vendor in processor:
            return vendor
    return None


def fast_linear_default(device: torch.device, dtype: torch.dtype) -> bool:
    """The sampler's ``fast_linear=None``: oneDNN for fp32 models on a CPU that is not Intel's.

    The measurements behind the rule (``python -m dar.bench --only ar`` on an AMD and an Intel host) are in the
    README's "Performance" section.
    """
    return torch.device(device).type == "cpu" and dtype == torch.float32 and cpu_vendor() != "GenuineIntel"


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through oneDNN; ``weight`` may be a plain (out, in) tensor or a reordered one.

    No autograd: call it only on tensors that need no gradient (the mode checks).
    """
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(weight · x₂ᵀ)ᵀ`` with x flattened to 2-D; contiguous output."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features but weight expects {weight.shape[-1]}.")
    rows = x.reshape(-1, x.shape[-1])
    out = torch.mm(weight, rows.t()).t().contiguous()
    if bias is not None:
        out = out.add_(bias)
    return out.view(*x.shape[:-1], weight.shape[0])


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class SkinnyLinearMode(TorchFunctionMode):
    """Within this mode, ``F.linear`` on fp32 CPU tensors runs through oneDNN (see the module docstring).

    Args:
        max_rows: Inputs of at most this many rows (product of the leading dimensions) get their weight reordered
            for that row count (and, without oneDNN, take :func:`skinny_linear`); larger inputs (a prefill) use
            oneDNN with the plain weight.
        pack_weights: Reorder the weights of such inputs into oneDNN's blocked layout, once; the copies are kept
            while their weights live (one more copy of the model's linear weights in memory, dar-b: 0.4 GB) and
            make decode steps ~15 % faster than oneDNN on the plain weights (measured on an AMD EPYC).

    Calls that need a gradient, and calls on other dtypes or devices, run ``F.linear`` unchanged.
    """

    def __init__(self, max_rows: int = 32, pack_weights: bool = True):
        super().__init__()
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive int, got {max_rows!r}.")
        self.max_rows = max_rows
        self.pack_weights = pack_weights
        self.onednn = onednn_available()

    @staticmethod
    def reordered(weight: torch.Tensor, rows: int) -> torch.Tensor:
        """The oneDNN layout of ``weight`` for ``rows`` rows, reordered again if the weight changed in place."""
        version = weight._version
        hit = _REORDERED.get(weight)
        if hit is None or hit[0] != version or hit[1] != rows:
            with torch.inference_mode():
                hit = (version, rows, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows))
            _REORDERED[weight] = hit
        return hit[2]

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
                and x.shape[-1] == weight.shape[-1]
                and (bias is None or bias.dtype == torch.float32)
                and not _needs_grad(x, weight, bias)
            ):
                rows = x.numel() // max(x.shape[-1], 1)
                if self.onednn:
                    if self.pack_weights and rows <= self.max_rows and weight.is_contiguous():
                        weight = self.reordered(weight, rows)
                    return onednn_linear(x, weight, bias)
                if rows <= self.max_rows:
                    return skinny_linear(x, weight, bias)
        return func(*args, **kwargs)
