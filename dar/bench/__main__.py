"""``python -m dar.bench``: run every benchmark, print one table, write JSON (``make bench``).

Each part lives in its own module with ``bench(quick: bool) -> list[dict]``; a row is
``{"name", "value", "unit"}`` plus optional ``"official"`` (the official code's figure on this machine class,
measured separately and named as such) and ``"note"``. Figures are medians of repeated runs in this process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import resource
import sys
import time

PARTS = ("tokenizer", "ar", "stream", "train", "official")


def _format_table(rows: list[dict]) -> str:
    header = f"{'benchmark':<58} {'value':>12} {'unit':<10} {'official':>10} {'ratio':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        official = row.get("official")
        ratio = row.get("ratio")
        lines.append(
            f"{row['name']:<58} {row['value']:>12.4g} {row['unit']:<10} "
            f"{'' if official is None else format(official, '.4g'):>10} "
            f"{'' if ratio is None else format(ratio, '.2f') + 'x':>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dar.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results.json", help="where to write the JSON results")
    parser.add_argument("--only", nargs="*", choices=PARTS, help="run only these parts")
    parser.add_argument("--quick", action="store_true", help="one timed run after warm-up (smoke check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from dar.images import prepare_output_file

    out = prepare_output_file(args.out, ".json")  # before minutes of benchmarks

    import torch

    torch.manual_seed(0)
    rows: list[dict] = []
    started = time.time()
    for part in args.only or PARTS:
        module = importlib.import_module(f"dar.bench.{part}")
        logging.info("running %s benchmarks ...", part)
        for row in module.bench(quick=args.quick):
            row.setdefault("part", part)
            if row.get("official") and "ratio" not in row and row["unit"].startswith("s"):
                row["ratio"] = row["official"] / row["value"]  # speed-up over the official code
            rows.append(row)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(
        {"name": "peak RSS of the benchmark process", "value": peak_rss_mib, "unit": "MiB", "part": "all"}
    )
    print(_format_table(rows))
    result = {
        "rows": rows,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "quick": args.quick,
        "seconds": time.time() - started,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
