"""Speed against the official D-AR code, measured in the same process (DESIGN §9 speed targets).

The shared CPU's throughput varies over time, so figures of the official code quoted from another time cannot
be compared with ours. This part builds the official modules from a checkout (``DAR_OFFICIAL_REPO``) and times
them alternately with ours in one run; the ratio official / ours is our speed-up:

- tokenizer ``tokenizer_v1`` (official ``configs/tokenizer_v1.yaml``), B=1, 256 px: encode, and the 8-step
  decode (official ``decode_code`` with its Adams–Bashforth-2 sampler, ours ``tok.decode``). Both models hold
  the same (random) weights, ours converted with :func:`tokenizer.official_keys.ours_to_official`.
- AR sampling: official GPT-B ``generate`` against :func:`llama_ar.sample_codes` on ``dar-b``, batch 4 with
  constant CFG 4.0 (8 rows), temperature 1, no top-k / top-p, 256 codes. Random weights (timing does not depend
  on the values).

Each figure is the median of 3 timed runs after one warm-up (1 run and 64 AR codes in quick mode), fp32, under
``torch.inference_mode()``, with torch's default thread count. The official modules import ``timm``,
``torchvision`` and ``einops``; the stand-ins of :mod:`dar.bench.official_stubs` are used where those are
missing. Nothing of the official code is copied here; it is imported from the checkout.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from dar.bench.official_stubs import load_official_modules

logger = logging.getLogger(__name__)

ENV_VAR = "DAR_OFFICIAL_REPO"
AR_BATCH = 4
CFG_SCALE = 4.0


def _alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed alternately (the order flips every repeat)."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            tick = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - tick)
    return {name: statistics.median(values) for name, values in times.items()}


def _rows(label: str, seconds: dict[str, float], note: str) -> list[dict]:
    ours, official = seconds["ours"], seconds["official"]
    return [
        {
            "name": f"{label} ours",
            "value": ours,
            "unit": "s",
            "official": official,
            "ratio": official / ours,
            "note": note + "; ratio = official / ours (speed-up), same run",
        },
        {"name": f"{label} official (same run)", "value": official, "unit": "s", "note": note},
    ]


def _bench_tokenizer(official: types.SimpleNamespace, repo: Path, repeats: int) -> list[dict]:
    import yaml

    from tokenizer import DARTokenizer
    from tokenizer.official_keys import ours_to_official

    with open(repo / "configs" / "tokenizer_v1.yaml") as f:
        config = yaml.safe_load(f)["model"]  # what the official Config("configs/tokenizer_v1.yaml") holds
    theirs = official.vq_model.VQModel(config).eval()
    ours = DARTokenizer.from_preset("tokenizer_v1").eval()
    weights = "same random weights"
    try:
        theirs.load_state_dict(ours_to_official(ours.state_dict(), ours.config), strict=True)
    except (RuntimeError, KeyError, ValueError) as error:
        weights = "different random weights"
        logger.warning("could not give the official tokenizer our weights (%s); timing both as built", error)

    size, n = ours.config.image_size, ours.config.num_tokens
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    codes = torch.randint(0, ours.config.codebook_size, (1, n), generator=generator)
    noise = torch.randn(1, 3, size, size, generator=generator)
    note = (
        f"B=1, {size}px, median of {repeats} alternating runs after a warm-up, fp32, "
        f"{torch.get_num_threads()} threads, {weights}"
    )
    with torch.inference_mode():
        encode = {"ours": lambda: ours.encode(images), "official": lambda: theirs.extract_code(images)}
        decode = {
            "ours": lambda: ours.decode(codes, noise=noise),
            "official": lambda: theirs.decode_code(codes, height=size, width=size),
        }
        _alternate(encode, 1)  # warm-up
        ours.decode(codes, num_steps=1, noise=noise)  # one-step warm-ups
        theirs.decode_code(codes, height=size, width=size, clip_steps=1)
        logger.info("official: timing tokenizer_v1 encode (ours vs official) ...")
        rows = _rows("tokenizer_v1 encode B=1 256px", _alternate(encode, repeats), note)
        logger.info("official: timing tokenizer_v1 decode (ours vs official) ...")
        rows += _rows(
            f"tokenizer_v1 decode B=1 256px {ours.config.num_steps}xAB2", _alternate(decode, repeats), note
        )
    return rows


def _bench_ar(official: types.SimpleNamespace, num_tokens: int, repeats: int) -> list[dict]:
    from llama_ar import VocabLayout, build_ar_model, sample_codes

    theirs = official.gpt.GPT_B(
        vocab_size=16384, num_classes=1000, cls_token_num=1, block_size=256, model_type="c2i"
    ).eval()
    ours = build_ar_model("dar-b", VocabLayout(16384, 1000)).eval()
    labels = torch.arange(AR_BATCH)

    def run(count: int) -> dict[str, Callable[[], object]]:
        return {
            "ours": lambda: sample_codes(
                ours, labels, count, cfg_scale=CFG_SCALE, generator=torch.Generator().manual_seed(0)
            ),
            "official": lambda: official.generate.generate(
                theirs,
                labels,
                count,
                cfg_scale=CFG_SCALE,
                cfg_interval=-1,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                sample_logits=True,
            ),
        }

    note = (
        f"batch {AR_BATCH} + CFG {CFG_SCALE} ({2 * AR_BATCH} rows), {num_tokens} codes, random weights, "
        f"median of {repeats} alternating runs after a warm-up, fp32, {torch.get_num_threads()} threads"
    )
    with torch.inference_mode():
        logger.info("official: timing AR sampling, %d codes (ours vs official) ...", num_tokens)
        _alternate(run(16), 1)  # warm-up
        seconds = _alternate(run(num_tokens), repeats)
    return _rows(f"AR GPT-B/dar-b B={AR_BATCH}+CFG {num_tokens} codes", seconds, note)


def bench(quick: bool = False) -> list[dict]:
    """Time our tokenizer and AR sampling against the official code in this process.

    Args:
        quick: one timed run (and 64 AR codes instead of 256) instead of the median of three.

    Returns:
        Rows ``{"name", "value", "unit", "note"}`` in seconds: for each benchmark an ``... ours`` row carrying
        ``official`` and ``ratio`` (official / ours, our speed-up) and an ``... official (same run)`` row.
        Empty when ``DAR_OFFICIAL_REPO`` does not name a checkout of showlab/D-AR.
    """
    repo_env = os.environ.get(ENV_VAR)
    if not repo_env or not Path(repo_env).is_dir():
        logger.info(
            "official benchmark skipped: set %s to a checkout of github.com/showlab/D-AR to enable it",
            ENV_VAR,
        )
        return []
    repo = Path(repo_env).resolve()
    try:
        official = load_official_modules(repo)
    except (ImportError, FileNotFoundError) as error:
        logger.warning("official benchmark skipped: could not import the official modules (%s)", error)
        return []
    repeats = 1 if quick else 3
    rows = _bench_tokenizer(official, repo, repeats)
    rows += _bench_ar(official, num_tokens=64 if quick else 256, repeats=repeats)
    return rows
