"""GPU throughput of ``DARPipeline`` (tokenizer_v1 + dar-l shapes, random weights), bf16 autocast; CUDA only.

``python -m dar.bench --only gpu`` runs it when CUDA is available and records a skip otherwise;
``python -m dar.bench.gpu [--batch 64] [--repeats 3] [--num-tokens 256]`` runs it alone. Measured:

- images/s of ``pipe(labels)`` (sample every code, then decode) at the given batch, median of the repeats
  after a warm-up, with ``torch.cuda.synchronize()`` around each call;
- time to the first streamed preview of ``pipe.stream(labels)`` (group 0 sampled + decoder step 0);
- peak CUDA memory of the offline call (``torch.cuda.max_memory_allocated``);
- with ``DAR_OFFICIAL_REPO`` set: the official GPT-L ``generate`` + ``decode_code`` on the same batch under the
  same autocast, images/s and its ratio to ours (a third party reports 0.16 s per image for it).

Random weights (timing does not depend on the values); CFG 4.0 constant. Never part of CI.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import torch

from dar.bench import skip

logger = logging.getLogger(__name__)


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        tick = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def _official(labels: torch.Tensor, batch: int, repeats: int, num_tokens: int) -> float | None:
    repo = os.environ.get("DAR_OFFICIAL_REPO")
    if not repo or not Path(repo).is_dir():
        skip("gpu", "the official sampler: DAR_OFFICIAL_REPO is not set")
        return None
    import yaml

    from dar.bench.official_stubs import load_official_modules

    official = load_official_modules(Path(repo))
    with open(Path(repo) / "configs" / "tokenizer_v1.yaml") as f:
        vq = official.vq_model.VQModel(yaml.safe_load(f)["model"]).cuda().eval()
    gpt = official.gpt.GPT_L(
        vocab_size=16384, num_classes=1000, cls_token_num=1, block_size=256, model_type="c2i"
    )
    gpt = gpt.cuda().eval()

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            codes = official.generate.generate(
                gpt, labels, num_tokens, cfg_scale=4.0, cfg_interval=-1, top_k=0
            )
            vq.decode_code(codes, height=256, width=256)

    return batch / _timed(run, repeats)


def run_gpu(batch: int = 64, repeats: int = 3, num_tokens: int = 256) -> list[dict]:
    """Time the pipeline on the current CUDA device; see the module docstring. Needs CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError("dar.bench.gpu needs a CUDA device; on CPU run python -m dar.bench instead")
    from dar.pipeline import DARPipeline
    from llama_ar import VocabLayout, build_ar_model
    from tokenizer import DARTokenizer

    device = torch.device("cuda")
    with torch.device(device):
        tok = DARTokenizer.from_preset("tokenizer_v1").eval()
        ar = build_ar_model("dar-l", VocabLayout(tok.config.codebook_size, 1000)).eval()
    pipe = DARPipeline(tokenizer=tok, ar_model=ar)
    pipe.set_progress_bar_config(disable=True)
    labels = [i % 1000 for i in range(batch)]

    def offline() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pipe(labels, generator=torch.Generator(device).manual_seed(0), output_type="pt")

    def first_preview() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            next(
                iter(pipe.stream(labels, generator=torch.Generator(device).manual_seed(0), output_type="pt"))
            )

    torch.cuda.reset_peak_memory_stats()
    seconds = _timed(offline, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30
    first = _timed(first_preview, repeats)
    name = torch.cuda.get_device_name()
    note = f"{name}, bf16 autocast, CFG 4.0, random weights, median of {repeats} after a warm-up"
    rows = [
        {
            "name": f"GPU DARPipeline B={batch} tokenizer_v1 + dar-l",
            "value": batch / seconds,
            "unit": "img/s",
            "note": note,
        },
        {"name": f"GPU time to first preview, B={batch}", "value": first, "unit": "s", "note": note},
        {"name": f"GPU peak memory, B={batch}", "value": peak, "unit": "GiB", "note": note},
    ]
    official = _official(torch.tensor(labels, device=device), batch, repeats, num_tokens)
    if official is not None:
        rows[0]["official"] = official
        rows[0]["ratio"] = (batch / seconds) / official
    return rows


def bench(quick: bool = False) -> list[dict]:
    """The GPU rows when CUDA is available (B=8 and 1 repeat in quick mode); otherwise a recorded skip."""
    if not torch.cuda.is_available():
        skip("gpu", "everything: no CUDA device (run python -m dar.bench --only gpu on a GPU machine)")
        return []
    return run_gpu(batch=8 if quick else 64, repeats=1 if quick else 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dar.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per pipeline call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument(
        "--num-tokens", type=int, default=256, help="codes per image for the official sampler"
    )
    args = parser.parse_args(argv)
    for name in ("batch", "repeats", "num_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this script times the pipeline on a GPU")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for row in run_gpu(args.batch, args.repeats, args.num_tokens):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
