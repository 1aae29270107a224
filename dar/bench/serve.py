"""LLM engines for the D-AR prior (``make bench``, part ``serve``): codes/s of each way to sample the same model.

On ``dar-b`` with random weights (ImageNet layout: 16,384 codes, 1,000 classes), constant CFG 4.0, temperature 1,
no top-k / top-p, batch 1 and 8 (CFG doubles the rows), the engines are timed in turn in this process
(:func:`dar.bench.alternate`):

- ``sample_codes``: our transformers sampler (KV cache, oneDNN linears);
- ``generate``: stock ``model.generate(guidance_scale=, negative_prompt_ids=)``;
- ``llama.cpp f32 / f16 / q8_0``: :class:`llama_ar.LlamaCppPrior` on GGUFs written by :func:`llama_ar.export_gguf`
  (the ``serve`` extra; skipped, and said so, without it);
- the official ``generate`` on GPT-B, when ``DAR_OFFICIAL_REPO`` names a checkout.

Each row is codes/s (images × codes / median wall seconds) with the speed relative to ``sample_codes``, pair by
pair. 64 codes per image (16 in quick mode) keep the part short; per-code cost grows slowly with the context,
so 256-code figures are a little lower.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from dar.bench import alternate, ratio_of_pairs, skip

logger = logging.getLogger(__name__)

CFG_SCALE = 4.0
GGUF_TYPES = ("f32", "f16", "q8_0")


def _official_generate() -> Callable | None:
    """A closure sampling with the official GPT-B ``generate``, or None (skip recorded)."""
    repo = os.environ.get("DAR_OFFICIAL_REPO")
    if not repo or not Path(repo).is_dir():
        skip("serve", "the official generate: set DAR_OFFICIAL_REPO to a checkout of github.com/showlab/D-AR")
        return None
    from dar.bench.official import official_generate
    from dar.bench.official_stubs import load_official_modules

    return official_generate(load_official_modules(Path(repo).resolve()), CFG_SCALE)


def bench(quick: bool = False) -> list[dict]:
    """Codes/s of every engine on ``dar-b``; see the module docstring.

    Args:
        quick: 16 codes, batch 1 only, f32 and q8_0 only, one timed repeat.
    """
    from llama_ar import VocabLayout, build_ar_model, class_prompt, null_prompt, sample_codes

    num_tokens, repeats = (16, 1) if quick else (64, 3)
    batches = (1,) if quick else (1, 8)
    torch.manual_seed(0)
    model = build_ar_model("dar-b", VocabLayout(16384, 1000)).eval()
    layout = VocabLayout.from_config(model.config)
    priors: dict[str, object] = {}
    work = tempfile.TemporaryDirectory(prefix="dar-bench-serve-")
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("gguf") is None:
        skip("serve", "llama.cpp engines: the serve extra is not installed (pip install -e .[serve])")
    else:
        from llama_ar import LlamaCppPrior, export_gguf

        model.save_pretrained(Path(work.name) / "ar_model")
        for dtype in ("f32", "q8_0") if quick else GGUF_TYPES:
            path = export_gguf(Path(work.name) / "ar_model", Path(work.name) / f"{dtype}.gguf", dtype=dtype)
            priors[f"llama.cpp {dtype}"] = LlamaCppPrior(path, n_threads=torch.get_num_threads())
    official = _official_generate()

    def engines(batch: int, count: int) -> dict[str, Callable[[], object]]:
        labels = torch.arange(batch) % layout.num_classes
        fns: dict[str, Callable[[], object]] = {
            "sample_codes": lambda: sample_codes(
                model, labels, count, cfg_scale=CFG_SCALE, generator=torch.Generator().manual_seed(0)
            ),
            "generate": lambda: model.generate(
                class_prompt(layout, labels),
                guidance_scale=CFG_SCALE,
                negative_prompt_ids=null_prompt(layout, batch),
                max_new_tokens=count,
            ),
        }
        for name, prior in priors.items():
            fns[name] = lambda prior=prior: prior.sample_codes(
                labels, count, cfg_scale=CFG_SCALE, generator=torch.Generator().manual_seed(0)
            )
        if official is not None:
            fns["official generate"] = lambda: official(labels, count)
        return fns

    rows = []
    note = (
        f"dar-b random weights, constant CFG {CFG_SCALE}, {num_tokens} codes, median of {repeats} alternating "
        f"repeats after a warm-up, {torch.get_num_threads()} threads; ratio = speed vs sample_codes, pair by pair"
    )
    try:
        with torch.inference_mode():
            for batch in batches:
                logger.info("serve: timing %d engines at batch %d ...", len(engines(batch, 1)), batch)
                alternate(engines(batch, 4), 1)  # warm-up: contexts, caches, lazy imports
                timings = alternate(engines(batch, num_tokens), repeats)
                ours = timings["sample_codes"]
                for name, timing in timings.items():
                    row = {
                        "name": f"serve dar-b B={batch}+CFG: {name}",
                        "value": batch * num_tokens / timing.median,
                        "unit": "codes/s",
                        "note": note,
                    }
                    if name != "sample_codes":
                        row["ratio"] = ratio_of_pairs(ours, timing)  # sample_codes time / this engine's
                    rows.append(row)
    finally:
        for prior in priors.values():
            prior.close()
        work.cleanup()
    return rows
