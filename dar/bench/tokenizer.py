"""Tokenizer encode / decode time per image on CPU, fp32 (DESIGN §9: decode ≥ 1.0× the official code).

Weights are random (timing does not depend on their values). ``tokenizer_v1`` runs at batch 1 and 256 px, and
decodes with 8 steps of the official Adams–Bashforth-2 sampler; the official code's figures on this machine
class were measured separately (encode 1.72 s, decode 25.3 s per image). The demo preset runs at batch 8 and is
reported per image. Each figure is the median of 3 timed runs after a warm-up (1 run in quick mode).
"""

from __future__ import annotations

import torch

from dar.bench import median_seconds

OFFICIAL_SECONDS = {"encode": 1.72, "decode": 25.3}


def _bench_preset(name: str, batch: int, repeats: int, official: bool) -> list[dict]:
    from tokenizer import DARTokenizer

    tok = DARTokenizer.from_preset(name).eval()
    size = tok.config.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    codes = torch.randint(0, tok.config.codebook_size, (batch, tok.config.num_tokens), generator=generator)
    with torch.inference_mode():
        tok.encode(images)  # warm-up
        tok.decode(codes, num_steps=1, generator=torch.Generator().manual_seed(0))  # warm-up, one step
        encode = median_seconds(lambda: tok.encode(images), repeats)
        decode = median_seconds(
            lambda: tok.decode(codes, generator=torch.Generator().manual_seed(0)), repeats
        )
    tag = f"B={batch}, {size}px"
    steps = f"{tok.config.num_steps} steps {tok.config.sampler}"
    note = f"median of {repeats}, fp32, {torch.get_num_threads()} threads, random weights"
    rows = [
        {"name": f"{name} encode ({tag})", "value": encode / batch, "unit": "s/img", "note": note},
        {"name": f"{name} decode ({tag}, {steps})", "value": decode / batch, "unit": "s/img", "note": note},
    ]
    if official:
        rows[0]["official"] = OFFICIAL_SECONDS["encode"]
        rows[1]["official"] = OFFICIAL_SECONDS["decode"]
    return rows


def bench(quick: bool = False) -> list[dict]:
    """Time encode and decode of ``tokenizer_v1`` (B=1) and of the demo preset (B=8, per image).

    Args:
        quick: one timed run after the warm-up instead of the median of three.

    Returns:
        Rows ``{"name", "value", "unit", "note"[, "official"]}``; values in seconds per image.
    """
    repeats = 1 if quick else 3
    rows = _bench_preset("tokenizer_v1", batch=1, repeats=repeats, official=True)
    rows += _bench_preset("demo", batch=8, repeats=repeats, official=False)
    return rows
