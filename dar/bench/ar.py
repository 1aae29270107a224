"""AR sampling speed: codes/s of ``llama_ar.sample_codes`` for ``dar-b`` with CFG on CPU, fp32 (DESIGN §9).

Target: ≥ 1.5× the official ``generate`` (official GPT-B, batch 4 + CFG = 8 rows, 256 codes: 32.8 s on this
machine class, 31 codes/s, measured separately). Weights are random (the official init: zero output head, so
codes are drawn uniformly; timing does not depend on the values). Each figure is the median of 3 timed runs after
a warm-up (1 run in quick mode). The fraction of peak uses ≈ 125 GFLOP/s, the fp32 matmul peak of the 2-core
reference machine, and counts 2 FLOPs per weight per row per token plus 4·d FLOPs per cached token per layer
per row for attention.
"""

from __future__ import annotations

import torch

from dar.bench import median_seconds

OFFICIAL_BATCH4_SECONDS = 32.8
OFFICIAL_BATCH4_CODES_PER_SECOND = 31.0
PEAK_FLOPS = 125e9
NUM_TOKENS = 256
CFG_SCALE = 4.0


def sampling_flops(model, rows: int, num_tokens: int) -> float:
    """FLOPs of sampling ``num_tokens`` codes for ``rows`` rows with a KV cache (one token per forward).

    Args:
        model: The ``LlamaForCausalLM``.
        rows: Rows per forward (2·B with CFG).
        num_tokens: Codes sampled (forwards run).

    Returns:
        Matmul FLOPs (decoder layers + full-vocabulary head) plus attention FLOPs.
    """
    config = model.config
    d, layers = config.hidden_size, config.num_hidden_layers
    matmul_weights = sum(
        p.numel() for layer in model.model.layers for p in layer.parameters() if p.dim() == 2
    )
    matmul_weights += model.lm_head.weight.numel()
    per_token = 2.0 * matmul_weights * rows * num_tokens
    cached = num_tokens * (num_tokens + 1) / 2  # keys attended over all forwards
    attention = 4.0 * d * layers * rows * cached
    return per_token + attention


def bench(
    quick: bool = False, batch_sizes: tuple[int, ...] = (1, 4, 8, 16), cache: str = "preallocated"
) -> list[dict]:
    """Time ``sample_codes`` on ``dar-b`` (ImageNet layout, 256 codes, constant CFG 4.0).

    Args:
        quick: One timed run after the warm-up instead of the median of three.
        batch_sizes: Images per call (CFG doubles the rows).
        cache: KV cache kind passed to ``sample_codes``.

    Returns:
        Rows ``{"name", "value", "unit", "note"[, "official"]}``: seconds per call, codes/s and the fraction of
        the fp32 peak, per batch size.
    """
    from llama_ar import VocabLayout, build_ar_model, sample_codes

    repeats = 1 if quick else 3
    torch.manual_seed(0)
    model = build_ar_model("dar-b", VocabLayout(codebook_size=16384, num_classes=1000)).eval()

    def run(batch: int, seed: int, fast_linear: bool | None = None) -> None:
        labels = torch.arange(batch) % 1000
        generator = torch.Generator().manual_seed(seed)
        sample_codes(
            model,
            labels,
            NUM_TOKENS,
            cfg_scale=CFG_SCALE,
            generator=generator,
            cache=cache,
            fast_linear=fast_linear,
        )

    run(batch_sizes[0], 0)  # warm-up (allocator, lazy imports)
    rows: list[dict] = []
    for batch in batch_sizes:
        seconds = median_seconds(lambda batch=batch: run(batch, 1), repeats)
        codes_per_second = batch * NUM_TOKENS / seconds
        peak = sampling_flops(model, 2 * batch, NUM_TOKENS) / seconds / PEAK_FLOPS
        tag = f"dar-b sample {NUM_TOKENS} codes, B={batch} + CFG ({2 * batch} rows)"
        note = f"median of {repeats}, fp32, {torch.get_num_threads()} threads, cache={cache}, random weights"
        seconds_row = {"name": f"{tag} time", "value": seconds, "unit": "s", "note": note}
        rate_row = {"name": f"{tag} codes/s", "value": codes_per_second, "unit": "codes/s", "note": note}
        if batch == 4:
            seconds_row["official"] = OFFICIAL_BATCH4_SECONDS
            rate_row["official"] = OFFICIAL_BATCH4_CODES_PER_SECOND
        peak_row = {"name": f"{tag} fraction of fp32 peak", "value": peak, "unit": "fraction", "note": note}
        rows += [seconds_row, rate_row, peak_row]
        if batch == 4:  # the same run with the plain F.linear kernels (llama_ar.kernels off)
            plain = median_seconds(lambda: run(4, 1, fast_linear=False), repeats)
            rows.append(
                {
                    "name": f"{tag} time, fast_linear=False",
                    "value": plain,
                    "unit": "s",
                    "note": note,
                    "official": OFFICIAL_BATCH4_SECONDS,
                }
            )
    return rows
