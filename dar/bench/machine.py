"""The machine's limits, measured in the same run as everything else, so each figure is a fraction of its bound.

- fp32 matmul peak: C = A·B with 2048×2048 operands at the torch thread count in use, through ``torch.mm`` (MKL)
  and through oneDNN (the kernel our inference paths use); the peak is the faster of the two (2·2048³ FLOPs
  per product / median time).
- bf16 matmul rate (reference only: every CPU path of ours runs fp32): the same product in bf16 through
  ``torch.mm`` (oneDNN, with AMX where the CPU has it); the row's ratio is bf16 / fp32 peak.
- memory bandwidth: a 256 MiB fp32 tensor copied (read + write: 2 × 256 MiB per copy) and added to another
  (2 reads + 1 write); the bandwidth is the faster of the two, in bytes moved per second.

AR decoding at small batch is bound by reading weights and KV cache (bandwidth), the tokenizer's decoder by
matrix products (the matmul peak): the other parts divide by :func:`limits`.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

MATMUL_SIDE = 2048
COPY_BYTES = 256 * 2**20


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


_BEST: dict[str, float] = {}


def limits(fresh: bool = False) -> dict[str, float]:
    """``matmul_flops`` (FLOP/s), ``bandwidth`` (B/s) and the figures behind them; the best seen in this process.

    Measured on the first call; ``fresh=True`` measures again (a part calls it right after its own timing, so
    the limit is taken at the same load) and keeps, per figure, the best of all measurements so far: on a
    machine other jobs load, a single snapshot can land in a slow moment and understate the limit.
    """
    if fresh or not _BEST:
        for key, value in _measure().items():
            _BEST[key] = max(_BEST.get(key, 0.0), value) if key != "load_average" else value
    return dict(_BEST)


def _measure() -> dict[str, float]:
    n = MATMUL_SIDE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    out = torch.empty(n, n)
    flops = 2.0 * n**3
    with torch.inference_mode():
        mkl = flops / _median(lambda: torch.mm(a, b, out=out), 5)
        onednn = 0.0
        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            bt = b.t().contiguous()  # linear computes x·Wᵀ: W = Bᵀ gives A·B
            onednn = flops / _median(
                lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], ""), 5
            )
        x = torch.ones(COPY_BYTES // 4)
        y, z = torch.empty_like(x), torch.empty_like(x)
        copy = 2 * COPY_BYTES / _median(lambda: y.copy_(x), 5)
        add = 3 * COPY_BYTES / _median(lambda: torch.add(x, y, out=z), 5)
    return {
        "matmul_flops": max(mkl, onednn),
        "matmul_flops_mkl": mkl,
        "matmul_flops_onednn": onednn,
        "bandwidth": max(copy, add),
        "bandwidth_copy": copy,
        "bandwidth_add": add,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def _bf16_matmul_flops() -> float:
    n = MATMUL_SIDE
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).bfloat16() for _ in range(2))
    with torch.inference_mode():
        return 2.0 * n**3 / _median(lambda: torch.mm(a, b), 5)


def bench(quick: bool = False) -> list[dict]:
    """The limits as rows (same measurement in quick and full mode: it takes a few seconds)."""
    lim = limits()
    bf16 = _bf16_matmul_flops()
    threads = (
        f"{lim['threads']} torch threads, load average {lim['load_average']:.1f} on {os.cpu_count()} CPUs"
    )
    return [
        {
            "name": f"fp32 matmul peak {MATMUL_SIDE}² (faster of torch.mm / oneDNN)",
            "value": lim["matmul_flops"] / 1e9,
            "unit": "GFLOP/s",
            "note": f"torch.mm {lim['matmul_flops_mkl'] / 1e9:.1f}, oneDNN {lim['matmul_flops_onednn'] / 1e9:.1f} "
            f"GFLOP/s; 2·n³ FLOPs / median of 5; {threads}",
        },
        {
            "name": f"bf16 matmul {MATMUL_SIDE}² (torch.mm; reference only, our CPU paths run fp32)",
            "value": bf16 / 1e9,
            "unit": "GFLOP/s",
            "ratio": bf16 / lim["matmul_flops"],
            "note": f"ratio = bf16 / fp32 peak; median of 5; {threads}",
        },
        {
            "name": "memory bandwidth (256 MiB fp32 copy / add)",
            "value": lim["bandwidth"] / 1e9,
            "unit": "GB/s",
            "note": f"copy {lim['bandwidth_copy'] / 1e9:.1f} GB/s (2 bytes moved per byte), add "
            f"{lim['bandwidth_add'] / 1e9:.1f} GB/s (3 per byte); median of 5; {threads}",
        },
    ]
