"""Tokenizer speed on CPU, fp32: the decoder forward against the matmul peak, the ``fast_linear`` switch, demo sizes.

- ``tokenizer_v1`` decoder, one forward (one decode step: B=1, 256 px, 1024 image tokens): seconds, achieved
  GFLOP/s and the fraction of the fp32 matmul peak measured by the ``machine`` part in the same run. FLOPs are
  counted during the warm-up forward (:class:`FlopCounter`): 2·in·out per row of every ``F.linear`` call plus
  4·L·M·head_dim per head of every attention (QKᵀ and AV); the rest (norms, RoPE, SiLU) is not counted.
- the same forward with ``DARTokenizer.fast_linear`` on (oneDNN linears, the default) and off (plain
  ``F.linear``), alternating; the ratio is the switch's gain.
- ``tokenizer_v1`` encode at B=1, and the demo preset's encode / 8-step decode at B=8, per image.

Random weights (timing does not depend on the values). Medians of 3 alternating repeats after a warm-up (one
repeat in quick mode). The comparison with the official code is in the ``official`` part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dar.bench import alternate, median_seconds, ratio_of_pairs
from dar.bench.machine import limits


class FlopCounter(TorchFunctionMode):
    """Counts the matmul FLOPs of every ``F.linear`` and ``F.scaled_dot_product_attention`` call inside it.

    Enter it inside any kernel-switching mode, so that it sees the calls first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            self.flops += 2.0 * x.numel() * weight.shape[0]  # rows · in · out · 2
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            self.flops += 4.0 * q.numel() * k.shape[-2]  # QKᵀ and AV: 2 · (B·H·L·hd) · M each
        return func(*args, **kwargs)


def _decoder_rows(quick: bool) -> list[dict]:
    from tokenizer import DARTokenizer
    from tokenizer.kernels import linear_kernels

    tok = DARTokenizer.from_preset("tokenizer_v1").eval()
    size = tok.config.image_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, size, size, generator=generator)
    cond = torch.randn(1, tok.config.tokens_per_step, tok.config.condition_dim, generator=generator)
    t = torch.full((1,), 0.3)
    repeats = 1 if quick else 3

    def forward(fast: bool):
        def run() -> None:
            with torch.inference_mode(), linear_kernels(fast, "cpu"):  # as DARTokenizer's decode steps do
                tok.decoder(x, t, cond)

        return run

    with torch.inference_mode(), linear_kernels(True, "cpu"), FlopCounter() as counter:
        tok.decoder(x, t, cond)  # warm-up, counting FLOPs
    timings = alternate({"fast": forward(True), "plain": forward(False)}, repeats)
    seconds = timings["fast"].median
    achieved = counter.flops / seconds
    peak = limits(fresh=True)["matmul_flops"]  # measured right after the timing it bounds
    note = (
        f"B=1, {size}px, {counter.flops / 1e9:.0f} GFLOP per forward (linears + attention), "
        f"median of {repeats}, fp32, {torch.get_num_threads()} threads, random weights"
    )
    gain = ratio_of_pairs(timings["plain"], timings["fast"])
    return [
        {
            "name": "tokenizer_v1 decoder forward (one decode step, B=1)",
            "value": seconds,
            "unit": "s",
            "note": note,
        },
        {
            "name": "tokenizer_v1 decoder forward: achieved",
            "value": achieved / 1e9,
            "unit": "GFLOP/s",
            "note": note,
        },
        {
            "name": "tokenizer_v1 decoder forward: fraction of the matmul peak",
            "value": achieved / peak,
            "unit": "fraction",
            "note": f"{achieved / 1e9:.0f} GFLOP/s / {peak / 1e9:.0f} GFLOP/s (machine part, same run)",
        },
        {
            "name": "tokenizer_v1 decoder forward, fast_linear=False (plain F.linear)",
            "value": timings["plain"].median,
            "unit": "s",
            "ratio": gain,
            "note": f"ratio = plain / fast_linear per alternating pair (the switch's gain); CPU-time ratio "
            f"{ratio_of_pairs(timings['plain'], timings['fast'], cpu=True):.2f}",
        },
    ]


def _preset_rows(name: str, batch: int, repeats: int, decode: bool) -> list[dict]:
    from tokenizer import DARTokenizer

    tok = DARTokenizer.from_preset(name).eval()
    size = tok.config.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    codes = torch.randint(0, tok.config.codebook_size, (batch, tok.config.num_tokens), generator=generator)
    tag = f"B={batch}, {size}px"
    note = f"median of {repeats}, fp32, {torch.get_num_threads()} threads, random weights"
    with torch.inference_mode():
        tok.encode(images)  # warm-up
        rows = [
            {
                "name": f"{name} encode ({tag})",
                "value": median_seconds(lambda: tok.encode(images), repeats) / batch,
                "unit": "s/img",
                "note": note,
            }
        ]
        if decode:
            tok.decode(codes, num_steps=1, generator=torch.Generator().manual_seed(0))  # warm-up, one step
            seconds = median_seconds(
                lambda: tok.decode(codes, generator=torch.Generator().manual_seed(0)), repeats
            )
            steps = f"{tok.config.num_steps} steps {tok.config.sampler}"
            rows.append(
                {
                    "name": f"{name} decode ({tag}, {steps})",
                    "value": seconds / batch,
                    "unit": "s/img",
                    "note": note,
                }
            )
    return rows


def bench(quick: bool = False) -> list[dict]:
    """The decoder forward (time, GFLOP/s, fraction of peak, fast_linear gain), encode B=1, demo encode/decode.

    Args:
        quick: one timed repeat after the warm-up instead of the median of three.

    Returns:
        Rows ``{"name", "value", "unit", "note"[, "ratio"]}``.
    """
    repeats = 1 if quick else 3
    rows = _decoder_rows(quick)
    rows += _preset_rows("tokenizer_v1", batch=1, repeats=repeats, decode=False)
    rows += _preset_rows("demo", batch=8, repeats=repeats, decode=True)
    return rows
