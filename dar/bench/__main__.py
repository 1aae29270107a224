"""``python -m dar.bench``: run every benchmark, print one table, write JSON (``make bench``).

Each part lives in its own module with ``bench(quick: bool) -> list[dict]``; a row is
``{"name", "value", "unit"}`` plus optional ``"official"`` (the official code's figure, measured in this run),
``"ratio"`` and ``"note"``. The ``machine`` part runs first: its matmul peak and memory bandwidth are the
limits the other parts' fractions divide by. What a run skips is printed after the table, with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import resource
import sys
import time

PARTS = ("machine", "ar", "tokenizer", "stream", "dart", "serve", "train", "official", "gpu")


def _format_table(rows: list[dict]) -> str:
    header = f"{'benchmark':<66} {'value':>10} {'unit':<9} {'official':>9} {'ratio':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        official = row.get("official")
        ratio = row.get("ratio")
        lines.append(
            f"{row['name']:<66} {row['value']:>10.4g} {row['unit']:<9} "
            f"{'' if official is None else format(official, '.4g'):>9} "
            f"{'' if ratio is None else format(ratio, '.2f') + 'x':>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dar.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results.json", help="where to write the JSON results")
    parser.add_argument("--only", nargs="*", choices=PARTS, help="run only these parts (machine always runs)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller runs (≤ 2 minutes)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own choice); on a machine loaded by other jobs, 1 is steadier",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "accelerate", "train_tokenizer", "train_llama_ar", "train_dart", "dar.training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from dar.images import prepare_output_file

    out = prepare_output_file(args.out, ".json")  # before minutes of benchmarks

    import torch

    from dar.bench import SKIPPED

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        logging.info(
            "load average %.1f on %d CPUs: other jobs share this machine; figures will be noisy (ratios of the "
            "same run are still comparable)",
            load,
            os.cpu_count(),
        )
    torch.manual_seed(0)
    rows: list[dict] = []
    started = time.time()
    parts = ["machine", *[p for p in args.only if p != "machine"]] if args.only else list(PARTS)
    skipped_parts = [p for p in PARTS if p not in parts]
    if skipped_parts:
        SKIPPED.append(f"parts not selected with --only: {', '.join(skipped_parts)}")
    seconds: dict[str, float] = {}
    for part in parts:
        tick = time.time()
        module = importlib.import_module(f"dar.bench.{part}")
        logging.info("running %s benchmarks ...", part)
        for row in module.bench(quick=args.quick):
            row.setdefault("part", part)
            rows.append(row)
        seconds[part] = time.time() - tick
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(
        {"name": "peak RSS of the benchmark process", "value": peak_rss_mib, "unit": "MiB", "part": "all"}
    )
    print(_format_table(rows))
    print("skipped:" if SKIPPED else "skipped: nothing")
    for line in SKIPPED:
        print(f"  - {line}")
    total = time.time() - started
    print(f"{total:.0f} s in all (" + ", ".join(f"{p} {s:.0f} s" for p, s in seconds.items()) + ")")
    result = {
        "rows": rows,
        "skipped": SKIPPED,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_average_start": load,
            "load_average_end": os.getloadavg()[0],
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "quick": args.quick,
        "seconds": total,
        "seconds_per_part": seconds,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
