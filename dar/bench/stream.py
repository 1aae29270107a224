"""Streaming vs offline generation: time to first preview, total time, images/s (DESIGN §9).

Offline is ``pipe(...)`` (sample all codes, then decode); streaming is ``pipe.stream(...)`` (decoder step k runs
as soon as code group k exists). Both run the same models on the same seeds, alternating, in this process.
"""

from __future__ import annotations

import statistics
import time

import torch

from dar.demo import DEMO_PIPELINE


def _pipelines(quick: bool):
    from dar.pipeline import DARPipeline
    from llama_ar import VocabLayout, build_ar_model
    from tokenizer import DARTokenizer

    if (DEMO_PIPELINE / "model_index.json").is_file():
        yield "demo model (shipped)", DARPipeline.from_pretrained(str(DEMO_PIPELINE)), 4
    else:
        tok = DARTokenizer.from_preset("demo").eval()
        ar = build_ar_model("demo", VocabLayout(tok.config.codebook_size, 10)).eval()
        yield "demo sizes (random init)", DARPipeline(tokenizer=tok, ar_model=ar), 4
    if not quick:
        tok = DARTokenizer.from_preset("tokenizer_v1").eval()
        ar = build_ar_model("dar-b", VocabLayout(tok.config.codebook_size, 1000)).eval()
        yield "dar-b + tokenizer_v1 (random init)", DARPipeline(tokenizer=tok, ar_model=ar), 1


def _time_offline(pipe, labels, seed):
    tick = time.perf_counter()
    pipe(labels, generator=torch.Generator().manual_seed(seed), output_type="pt")
    return time.perf_counter() - tick


def _time_stream(pipe, labels, seed):
    tick = time.perf_counter()
    first = None
    for _ in pipe.stream(labels, generator=torch.Generator().manual_seed(seed), output_type="pt"):
        if first is None:
            first = time.perf_counter() - tick
    return first, time.perf_counter() - tick


def bench(quick: bool = False) -> list[dict]:
    rows = []
    repeats = 1 if quick else 3
    for name, pipe, batch in _pipelines(quick):
        pipe.set_progress_bar_config(disable=True)
        labels = [i % pipe.num_classes for i in range(batch)]
        _time_offline(pipe, labels, 0)  # warm-up
        offline, first, total = [], [], []
        for seed in range(repeats):
            offline.append(_time_offline(pipe, labels, seed))
            f, t = _time_stream(pipe, labels, seed)
            first.append(f)
            total.append(t)
        off, tot = statistics.median(offline), statistics.median(total)
        tag = f"{name}, B={batch}, cfg 4"
        rows += [
            {"name": f"offline generate+decode: {tag}", "value": off, "unit": "s"},
            {
                "name": f"stream total: {tag}",
                "value": tot,
                "unit": "s",
                "ratio": tot / off,
                "note": "ratio = stream / offline (target <= 1.05)",
            },
            {
                "name": f"stream time to first preview: {tag}",
                "value": statistics.median(first),
                "unit": "s",
                "ratio": statistics.median(first) / off,
                "note": "ratio = first preview / offline total",
            },
            {"name": f"pipeline throughput: {tag}", "value": batch / off, "unit": "img/s"},
        ]
    return rows
