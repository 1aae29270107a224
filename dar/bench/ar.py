"""AR sampling speed: codes/s of ``llama_ar.sample_codes`` on ``dar-b`` with CFG, fp32 on CPU, and its bound.

Batches 1, 8 and 32 with constant CFG 4.0 (2, 16 and 64 rows per forward), 32 codes per run in full mode (16 in
quick mode, without B=32), median of 3 runs after a warm-up (1 in quick mode), random weights (timing does not depend on the
values). Each batch is also timed with ``fast_linear=False`` (plain ``F.linear``), alternating with the default, and
the ratio is the switch's gain on this host. The speed against the official ``generate`` is in the ``official``
part (same process, alternating).

Each decode step reads every linear weight once (decoder layers + the full-vocabulary head, fp32) and the
KV cache of every layer (2 · rows · cached tokens · hidden · 4 bytes), and does 2 FLOPs per weight per row.
The step's limit is the larger of bytes / bandwidth and FLOPs / matmul peak (both measured in the same run by
the ``machine`` part); the row reports that limit over the measured time and names which one binds.
"""

from __future__ import annotations

import torch

from dar.bench import alternate, ratio_of_pairs, skip
from dar.bench.machine import limits

CFG_SCALE = 4.0


def step_cost(model, rows: int, num_tokens: int) -> tuple[float, float]:
    """Average bytes read and FLOPs per decode step when sampling ``num_tokens`` codes for ``rows`` rows.

    Args:
        model: The ``LlamaForCausalLM``.
        rows: Rows per forward (2·B with CFG).
        num_tokens: Codes sampled (one forward each after the class-token prefill).

    Returns:
        ``(bytes, flops)``: weights (4 bytes each, read once per step) plus the KV cache read by attention,
        and 2·weights·rows matmul FLOPs plus 4·hidden FLOPs per cached token per layer per row.
    """
    config = model.config
    d, layers = config.hidden_size, config.num_hidden_layers
    weights = sum(p.numel() for layer in model.model.layers for p in layer.parameters() if p.dim() == 2)
    weights += model.lm_head.weight.numel()
    cached = (num_tokens + 1) / 2 + 1  # mean number of cached positions a step attends over
    kv_bytes = 2 * rows * cached * d * 4 * layers
    flops = 2.0 * weights * rows + 4.0 * d * layers * rows * cached
    return 4.0 * weights + kv_bytes, flops


def bound_note(seconds_per_step: float, cost: tuple[float, float]) -> tuple[float, str]:
    """Fraction of the step's limit reached and a note saying which limit binds and how it was computed."""
    lim = limits(fresh=True)  # measured right after the timing it bounds
    memory_time, compute_time = cost[0] / lim["bandwidth"], cost[1] / lim["matmul_flops"]
    if memory_time >= compute_time:
        limit, name = (
            memory_time,
            (
                f"bandwidth-bound: {cost[0] / 1e6:.0f} MB weights+KV per step / {lim['bandwidth'] / 1e9:.1f} GB/s"
            ),
        )
    else:
        limit, name = (
            compute_time,
            (f"matmul-bound: {cost[1] / 1e9:.2f} GFLOP per step / {lim['matmul_flops'] / 1e9:.0f} GFLOP/s"),
        )
    return limit / seconds_per_step, name


def bench(quick: bool = False, batch_sizes: tuple[int, ...] = (1, 8, 32)) -> list[dict]:
    """Time ``sample_codes`` on ``dar-b`` (ImageNet layout, constant CFG 4.0) at each batch size.

    Args:
        quick: One timed run of 16 codes after the warm-up instead of the median of three runs of 32; no B=32.
        batch_sizes: Images per call (CFG doubles the rows).

    Returns:
        Rows ``{"name", "value", "unit", "note"}``: codes/s and the fraction of the step's limit per batch size.
    """
    from llama_ar import VocabLayout, build_ar_model, sample_codes

    repeats, num_tokens = (1, 16) if quick else (3, 32)
    if quick and 32 in batch_sizes:
        batch_sizes = tuple(b for b in batch_sizes if b != 32)
        skip("ar", "B=32 in quick mode (the largest batch: half of this part's time)")
    torch.manual_seed(0)
    model = build_ar_model("dar-b", VocabLayout(codebook_size=16384, num_classes=1000)).eval()

    def run(batch: int, count: int, fast: bool | None = None) -> None:
        labels = torch.arange(batch) % 1000
        sample_codes(
            model,
            labels,
            count,
            cfg_scale=CFG_SCALE,
            fast_linear=fast,
            generator=torch.Generator().manual_seed(1),
        )

    rows: list[dict] = []
    for batch in batch_sizes:
        run(batch, 8)  # warm-up: allocator, lazy imports, oneDNN weight reorder for this row count
        run(batch, 8, fast=False)
        timings = alternate(
            {
                "default": lambda batch=batch: run(batch, num_tokens),
                "plain": lambda batch=batch: run(batch, num_tokens, fast=False),
            },
            repeats,
        )
        seconds = timings["default"].median
        fraction, limit = bound_note(seconds / num_tokens, step_cost(model, 2 * batch, num_tokens))
        tag = f"dar-b sample, B={batch} + CFG ({2 * batch} rows), {num_tokens} codes"
        note = f"median of {repeats}, fp32, {torch.get_num_threads()} threads, random weights"
        rows += [
            {
                "name": f"{tag}: codes/s",
                "value": batch * num_tokens / seconds,
                "unit": "codes/s",
                "note": note,
            },
            {
                "name": f"{tag}: fraction of the step limit",
                "value": fraction,
                "unit": "fraction",
                "note": limit,
            },
            {
                "name": f"{tag}, fast_linear=False: codes/s",
                "value": batch * num_tokens / timings["plain"].median,
                "unit": "codes/s",
                "ratio": ratio_of_pairs(timings["plain"], timings["default"]),
                "note": f"{note}; ratio = plain / default time per alternating pair (the fast_linear gain)",
            },
        ]
    return rows
