"""DART sampling (``make bench``, part ``dart``): seconds per image, the KV cache's gain, DART-AR's latency.

On the ``demo`` preset (32 px, patch 8: K = 16 tokens per level, T = 8 levels, 4 × 192 Llama) with random weights
(speed does not depend on them), constant CFG 4.0 (conditional and null rows in one forward):

- seconds per image of ``DARTPipeline`` at batch 1 and 8 (T sequential forwards with the cache);
- the cached sampler against the uncached reference path at batch 8, pair by pair (same images; dart.md §5.9
  asks ≥ 3× at T = 8);
- DART-AR (the same sizes, token-causal: T·K = 128 sequential forwards) against DART at batch 8: the paper's
  latency ratio is ≈ K.
"""

from __future__ import annotations

import logging

import torch

from dar.bench import alternate, ratio_of_pairs

logger = logging.getLogger(__name__)

CFG_SCALE = 4.0


def bench(quick: bool = False) -> list[dict]:
    """DART sampling figures; see the module docstring.

    Args:
        quick: one timed repeat, no DART-AR row.
    """
    from dart import DARTModel, DARTPipeline

    repeats = 1 if quick else 3
    torch.manual_seed(0)
    pipes = {"dart": DARTPipeline(DARTModel.from_preset("demo").eval())}
    if not quick:
        pipes["dart_ar"] = DARTPipeline(DARTModel.from_preset("demo", variant="dart_ar").eval())
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    def call(name: str, batch: int, use_cache: bool = True):
        labels = [i % 10 for i in range(batch)]
        generator = torch.Generator().manual_seed(0)
        return lambda: pipes[name](
            labels, cfg_scale=CFG_SCALE, generator=generator, output_type="pt", use_cache=use_cache
        )

    note = (
        f"demo preset, random weights, CFG {CFG_SCALE}, median of {repeats} alternating repeats after a warm-up, "
        f"fp32, {torch.get_num_threads()} threads"
    )
    rows = []
    with torch.inference_mode():
        for batch in (1, 8):
            fns = {"cached": call("dart", batch), "uncached": call("dart", batch, use_cache=False)}
            if batch == 8 and "dart_ar" in pipes:
                fns["dart_ar"] = call("dart_ar", batch)
            logger.info("dart: timing %s at batch %d ...", ", ".join(fns), batch)
            alternate(fns, 1)  # warm-up
            timings = alternate(fns, repeats)
            cached = timings["cached"]
            rows.append(
                {
                    "name": f"DART demo, B={batch}+CFG: seconds per image",
                    "value": cached.median / batch,
                    "unit": "s/image",
                    "note": note,
                }
            )
            rows.append(
                {
                    "name": f"DART demo, B={batch}+CFG: cached vs uncached sampler (speed-up)",
                    "value": ratio_of_pairs(timings["uncached"], cached),
                    "unit": "x",
                    "note": note + "; uncached / cached, pair by pair",
                }
            )
            if "dart_ar" in timings:
                rows.append(
                    {
                        "name": f"DART-AR demo, B={batch}+CFG: latency vs DART (K = 16)",
                        "value": ratio_of_pairs(timings["dart_ar"], cached),
                        "unit": "x",
                        "note": note + "; DART-AR / DART, pair by pair",
                    }
                )
    return rows
