"""Speed against the official D-AR code, measured in the same process (DESIGN §9 speed targets).

The shared CPU's throughput varies over time, so figures of the official code quoted from another time cannot
be compared with ours. This part builds the official modules from a checkout (``DAR_OFFICIAL_REPO``) and times
them alternately with ours in one run (:func:`dar.bench.alternate`: the order flips every repeat); each row's
ratio is the median over repeats of official / ours taken pair by pair (our speed-up), from wall time, with the
same ratio from process CPU time in the note (steadier on a loaded machine):

- AR sampling: official GPT-B ``generate`` against :func:`llama_ar.sample_codes` on ``dar-b``, batch 4 with
  constant CFG 4.0 (8 rows), temperature 1, no top-k / top-p, 256 codes (32 in quick mode), random weights.
- tokenizer ``tokenizer_v1`` (official ``configs/tokenizer_v1.yaml``), 256 px: encode (B=1) and decode with the
  Adams–Bashforth-2 sampler (official ``decode_code(clip_steps=k)``, ours ``tok.decode`` of the first k
  groups), B=1 with k=2 and B=8 with k=1 (B=1, k=1 in quick mode; B=8 is skipped there). Each step costs the
  same (one decoder forward on the whole image), so k < 8 keeps the run short without changing the ratio much.
  Both models hold the same random weights (ours converted with
  :func:`tokenizer.official_keys.ours_to_official`; the zero-initialised layers randomised so that the
  velocity is not zero) and start from the same noise; the row notes the largest pixel difference.

Three repeats after a warm-up (one without warm-up in quick mode, and one for B=8), fp32, under ``torch.inference_mode()``.
The official modules import ``timm``, ``torchvision`` and ``einops``; the stand-ins of
:mod:`dar.bench.official_stubs` are used where those are missing. Nothing of the official code is copied here.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable
from pathlib import Path

import torch

from dar.bench import Timings, alternate, ratio_of_pairs, skip
from dar.bench.official_stubs import load_official_modules

logger = logging.getLogger(__name__)

ENV_VAR = "DAR_OFFICIAL_REPO"
AR_BATCH = 4
CFG_SCALE = 4.0
PIXEL_TOLERANCE = 1e-4


def _rows(label: str, timings: dict[str, Timings], note: str) -> list[dict]:
    ours, official = timings["ours"], timings["official"]
    cpu_ratio = ratio_of_pairs(official, ours, cpu=True)
    return [
        {
            "name": f"{label} ours",
            "value": ours.median,
            "unit": "s",
            "official": official.median,
            "ratio": ratio_of_pairs(official, ours),
            "note": f"{note}; ratio = median of official/ours per pair (wall); CPU-time ratio {cpu_ratio:.2f}",
        },
        {"name": f"{label} official (same run)", "value": official.median, "unit": "s", "note": note},
    ]


def _randomize_zero_parameters(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every all-zero parameter (zero-init output layers and adaLN) small random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def _bench_tokenizer(official: types.SimpleNamespace, repo: Path, quick: bool) -> list[dict]:
    import yaml

    from tokenizer import DARTokenizer
    from tokenizer.official_keys import ours_to_official

    with open(repo / "configs" / "tokenizer_v1.yaml") as f:
        config = yaml.safe_load(f)["model"]  # what the official Config("configs/tokenizer_v1.yaml") holds
    theirs = official.vq_model.VQModel(config).eval()
    ours = DARTokenizer.from_preset("tokenizer_v1").eval()
    _randomize_zero_parameters(ours)
    theirs.load_state_dict(ours_to_official(ours.state_dict(), ours.config), strict=True)
    size, n, tps = ours.config.image_size, ours.config.num_tokens, ours.config.tokens_per_step
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    rows: list[dict] = []
    with torch.inference_mode():
        images = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
        encode = {"ours": lambda: ours.encode(images), "official": lambda: theirs.extract_code(images)}
        alternate(encode, 1)  # warm-up
        logger.info("official: timing tokenizer_v1 encode (ours vs official) ...")
        repeats = 1 if quick else 3
        note = f"B=1, {size}px, {repeats} alternating repeats after a warm-up, fp32, {threads} threads"
        rows += _rows(f"tokenizer_v1 encode B=1 {size}px", alternate(encode, repeats), note)
        rows += _decoder_forward_rows(ours, theirs, 1 if quick else 3)
        plans = [(1, 1, 1)] if quick else [(1, 2, 3), (8, 1, 1)]  # (batch, steps, repeats)
        if quick:
            skip(
                "official",
                "tokenizer_v1 decode at B=8 in quick mode (about 2 minutes on a loaded 2-core machine)",
            )
        for batch, steps, repeats in plans:
            codes = torch.randint(0, ours.config.codebook_size, (batch, n), generator=generator)
            torch.manual_seed(123)
            noise = torch.randn(batch, 3, size, size)
            outputs: dict[str, torch.Tensor] = {}

            def run_official(codes=codes, steps=steps, outputs=outputs):
                torch.manual_seed(123)  # decode_code draws the same noise from the global RNG
                outputs["official"] = theirs.decode_code(codes, height=size, width=size, clip_steps=steps)

            def run_ours(codes=codes, steps=steps, noise=noise, outputs=outputs):
                outputs["ours"] = ours.decode(codes[:, : steps * tps], noise=noise)

            decode: dict[str, Callable[[], object]] = {"ours": run_ours, "official": run_official}
            if batch == 1 and not quick:
                ours.decode(codes[:, :tps], noise=noise)  # one-step warm-ups
                theirs.decode_code(codes, height=size, width=size, clip_steps=1)
            logger.info(
                "official: timing tokenizer_v1 decode B=%d, %d step(s) (ours vs official) ...", batch, steps
            )
            timings = alternate(decode, repeats)
            error = (outputs["ours"] - outputs["official"]).abs().max().item()
            if not error <= PIXEL_TOLERANCE:
                logger.warning("tokenizer_v1 decode B=%d: ours and official differ by %.3g", batch, error)
            note = (
                f"B={batch}, {size}px, first {steps} of {ours.config.num_steps} AB2 steps, {repeats} alternating "
                f"repeat(s), fp32, {threads} threads, same random weights and noise: max |ours − official| = "
                f"{error:.2g} ({'within' if error <= PIXEL_TOLERANCE else 'NOT within'} {PIXEL_TOLERANCE:g})"
            )
            label = f"tokenizer_v1 decode B={batch} {size}px {steps} step{'s' if steps > 1 else ''}"
            rows += _rows(label, timings, note)
            rows[-2]["pixel_error"] = error
    return rows


def _decoder_forward_rows(ours, theirs, repeats: int) -> list[dict]:
    """One decoder forward (one decode step, B=1) of ours and of the official ``DiffusionCore``, alternating, as
    GFLOP/s and fraction of the matmul peak: whether a decode speed-up can come from the kernels at all.

    The FLOPs are counted once, on ours (:class:`dar.bench.tokenizer.FlopCounter`); both compute the same
    velocity (checked), the official forward also runs its REPA projection head (~1 % more work, not counted).
    """
    from dar.bench.machine import limits
    from dar.bench.tokenizer import FlopCounter
    from tokenizer.kernels import linear_kernels

    size, tps, dim = ours.config.image_size, ours.config.tokens_per_step, ours.config.condition_dim
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, size, size, generator=generator)
    cond = torch.randn(1, tps, dim, generator=generator)
    t = torch.full((1,), 0.3)
    outputs: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        with linear_kernels(ours.fast_linear, "cpu"):  # as our decode steps run it
            outputs["ours"] = ours.decoder(x, t, cond).velocity

    def run_official() -> None:
        outputs["official"] = theirs.diff_decoder.net(x, t, cond)[0]

    with linear_kernels(ours.fast_linear, "cpu"), FlopCounter() as counter:
        ours.decoder(x, t, cond)  # warm-up, counting FLOPs
    run_official()  # warm-up
    logger.info("official: timing one tokenizer_v1 decoder forward (ours vs official) ...")
    timings = alternate({"ours": run_ours, "official": run_official}, repeats)
    peak = limits(fresh=True)["matmul_flops"]  # measured right after the timing it bounds
    error = (outputs["ours"] - outputs["official"]).abs().max().item()
    flops = counter.flops
    note = (
        f"B=1, {size}px, {flops / 1e9:.0f} GFLOP counted on ours, {repeats} alternating repeat(s), fp32, "
        f"{torch.get_num_threads()} threads; max |v_ours − v_official| = {error:.2g}"
    )
    rows = _rows(f"tokenizer_v1 decoder forward B=1 {size}px", timings, note)
    for name, timing in (("ours", timings["ours"]), ("official", timings["official"])):
        achieved = flops / timing.median
        rows.append(
            {
                "name": f"tokenizer_v1 decoder forward, {name}: fraction of the matmul peak",
                "value": achieved / peak,
                "unit": "fraction",
                "note": f"{achieved / 1e9:.0f} GFLOP/s / {peak / 1e9:.0f} GFLOP/s (machine part, same run)",
            }
        )
    return rows


def official_generate(official: types.SimpleNamespace, cfg_scale: float = CFG_SCALE) -> Callable:
    """``(labels, count) -> codes`` with the official GPT-B (random weights) and its ``generate``: constant CFG,
    plain sampling (no top-k / top-p), temperature 1 — the settings every official AR timing uses."""
    model = official.gpt.GPT_B(
        vocab_size=16384, num_classes=1000, cls_token_num=1, block_size=256, model_type="c2i"
    ).eval()

    def run(labels: torch.Tensor, count: int) -> object:
        return official.generate.generate(
            model,
            labels,
            count,
            cfg_scale=cfg_scale,
            cfg_interval=-1,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            sample_logits=True,
        )

    return run


def _bench_ar(official: types.SimpleNamespace, num_tokens: int, repeats: int) -> list[dict]:
    from llama_ar import VocabLayout, build_ar_model, sample_codes

    theirs = official_generate(official)
    ours = build_ar_model("dar-b", VocabLayout(16384, 1000)).eval()
    labels = torch.arange(AR_BATCH)

    def run(count: int) -> dict[str, Callable[[], object]]:
        return {
            "ours": lambda: sample_codes(
                ours, labels, count, cfg_scale=CFG_SCALE, generator=torch.Generator().manual_seed(0)
            ),
            "official": lambda: theirs(labels, count),
        }

    note = (
        f"batch {AR_BATCH} + CFG {CFG_SCALE} ({2 * AR_BATCH} rows), {num_tokens} codes, random weights, "
        f"{repeats} alternating repeats after a warm-up, fp32, {torch.get_num_threads()} threads"
    )
    with torch.inference_mode():
        logger.info("official: timing AR sampling, %d codes (ours vs official) ...", num_tokens)
        alternate(run(16), 1)  # warm-up
        timings = alternate(run(num_tokens), repeats)
    return _rows(f"AR GPT-B/dar-b B={AR_BATCH}+CFG {num_tokens} codes", timings, note)


def bench(quick: bool = False) -> list[dict]:
    """Time our tokenizer and AR sampling against the official code in this process.

    Args:
        quick: one timed repeat, 32 AR codes instead of 256, one decode step without warm-up, no B=8 decode.

    Returns:
        Rows ``{"name", "value", "unit", "note"}`` in seconds: for each benchmark an ``... ours`` row carrying
        ``official`` and ``ratio`` (official / ours, our speed-up) and an ``... official (same run)`` row.
        Empty when ``DAR_OFFICIAL_REPO`` does not name a checkout of showlab/D-AR.
    """
    repo_env = os.environ.get(ENV_VAR)
    if not repo_env or not Path(repo_env).is_dir():
        skip(
            "official",
            f"everything: set {ENV_VAR} to a checkout of github.com/showlab/D-AR to time ours against it",
        )
        return []
    repo = Path(repo_env).resolve()
    try:
        official = load_official_modules(repo)
    except (ImportError, FileNotFoundError) as error:
        skip("official", f"everything: could not import the official modules ({error})")
        return []
    rows = _bench_ar(official, num_tokens=32 if quick else 256, repeats=1 if quick else 3)
    rows += _bench_tokenizer(official, repo, quick)
    return rows
