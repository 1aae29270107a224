"""Streaming vs offline generation: time to first preview and total time against their targets (DESIGN §9).

Offline is ``pipe(...)`` (sample all codes, then decode); streaming is ``pipe.stream(...)`` (decoder step k runs
as soon as code group k exists). In the same run the AR sampling alone (``sample_codes`` with the pipeline's
options) and the decode alone (``tokenizer.decode``) are timed too, so the targets are measured, not assumed:

- first preview ≤ AR time / num_steps + one decoder step (decode time / num_steps);
- whole stream ≤ 1.02 × offline.

All four run on the same seeds, alternating, in this process, after a warm-up: the shipped demo model (B=4, or
the demo sizes with random weights when the checkpoint is missing), 3 repeats (1 in quick mode), and in full
mode ``dar-b`` + ``tokenizer_v1`` with random weights at B=1, 1 repeat (about 3 minutes on a loaded 2-core
machine; skipped in quick mode).
"""

from __future__ import annotations

import logging
import time

import torch

from dar.bench import alternate, skip
from dar.demo import DEMO_PIPELINE

logger = logging.getLogger(__name__)


def _pipelines(quick: bool):
    from dar.pipeline import DARPipeline
    from llama_ar import VocabLayout, build_ar_model
    from tokenizer import DARTokenizer

    if (DEMO_PIPELINE / "model_index.json").is_file():
        yield "demo model (shipped)", DARPipeline.from_pretrained(str(DEMO_PIPELINE)), 4, 1 if quick else 3
    else:
        tok = DARTokenizer.from_preset("demo").eval()
        ar = build_ar_model("demo", VocabLayout(tok.config.codebook_size, 10)).eval()
        yield "demo sizes (random init)", DARPipeline(tokenizer=tok, ar_model=ar), 4, 1 if quick else 3
    if quick:
        skip("stream", "dar-b + tokenizer_v1 in quick mode (about 3 minutes on a loaded 2-core machine)")
        return
    tok = DARTokenizer.from_preset("tokenizer_v1").eval()
    ar = build_ar_model("dar-b", VocabLayout(tok.config.codebook_size, 1000)).eval()
    yield "dar-b + tokenizer_v1 (random init)", DARPipeline(tokenizer=tok, ar_model=ar), 1, 1


def _runs(pipe, labels: list[int], first: list[float]) -> dict:
    from llama_ar import sample_codes

    tok = pipe.tokenizer
    size = tok.config.image_size
    noise = torch.randn(len(labels), 3, size, size, generator=torch.Generator().manual_seed(1))
    codes_box: list[torch.Tensor] = []

    def offline() -> None:
        pipe(labels, generator=torch.Generator().manual_seed(0), output_type="pt")

    def stream() -> None:
        tick = time.perf_counter()
        for step in pipe.stream(labels, generator=torch.Generator().manual_seed(0), output_type="pt"):
            if step.index == 0:
                first.append(time.perf_counter() - tick)

    def ar_only() -> None:
        codes_box[:] = [
            sample_codes(
                pipe.ar_model,
                labels,
                tok.config.num_tokens,
                cfg_scale=4.0,
                generator=torch.Generator().manual_seed(0),
            )
        ]

    def decode_only() -> None:
        with torch.inference_mode():
            tok.decode(codes_box[0], noise=noise)

    return {"offline": offline, "stream": stream, "ar": ar_only, "decode": decode_only}


def bench(quick: bool = False) -> list[dict]:
    """Rows: offline and stream totals, first preview, and both against their targets, per pipeline."""
    rows = []
    for name, pipe, batch, repeats in _pipelines(quick):
        pipe.set_progress_bar_config(disable=True)
        labels = [i % pipe.num_classes for i in range(batch)]
        first: list[float] = []
        runs = _runs(pipe, labels, first)
        logger.info("stream: timing %s, B=%d ...", name, batch)
        # warm-up (oneDNN weight reorders, allocator): one code group and one decoder step; decode_only's codes
        pipe(labels, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="pt")
        runs["ar"]()
        timings = alternate(runs, repeats)
        steps = pipe.tokenizer.config.num_steps
        offline, total = timings["offline"].median, timings["stream"].median
        ar, decode = timings["ar"].median, timings["decode"].median
        first_preview = sorted(first)[len(first) // 2]
        target = ar / steps + decode / steps
        tag = f"{name}, B={batch}, cfg 4"
        note = f"median of {repeats} alternating repeats, fp32, {torch.get_num_threads()} threads"
        rows += [
            {"name": f"offline generate+decode: {tag}", "value": offline, "unit": "s", "note": note},
            {
                "name": f"stream total: {tag}",
                "value": total,
                "unit": "s",
                "ratio": total / offline,
                "note": f"ratio = stream / offline (target ≤ 1.02); {note}",
            },
            {
                "name": f"stream time to first preview: {tag}",
                "value": first_preview,
                "unit": "s",
                "ratio": first_preview / target,
                "note": f"ratio = first preview / (AR {ar:.3g} s / {steps} + decode {decode:.3g} s / {steps}) "
                f"(target ≤ 1); {note}",
            },
            {"name": f"pipeline throughput (offline): {tag}", "value": batch / offline, "unit": "img/s"},
        ]
    return rows
