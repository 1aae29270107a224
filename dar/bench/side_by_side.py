"""The README's side-by-side of trained demo models (D-AR, DART, DART-FM, DART-AR, ablations), one run, one table.

For every ``NAME=FOLDER`` (a D-AR or DART pipeline folder, optionally ``NAME=FOLDER@RUN_DIR`` to read the
training compute from ``RUN_DIR/logs/train_log.jsonl``; several run folders joined by ``+``, e.g. a D-AR
tokenizer and its prior):

- quality by the evaluation protocol of ``dar eval`` (``dar.evaluation``): ``--per-class`` samples per class at
  the pipeline's default settings, class accuracy by the shipped demo classifier, FID / precision / recall on
  its features against the 1,000 real test silhouettes;
- seconds per image at batch 8 on this CPU, all models timed alternating in the same process (median of
  ``--repeats`` after a warm-up), fp32;
- sequential network evaluations per image (D-AR: one AR forward per code, then the decoder's steps, which
  streaming overlaps with the AR; DART: one forward per level; DART-AR: one per token; DART-FM: one per level
  plus ``fm_steps`` head evaluations per level), and parameters.

Usage: ``python -m dar.bench.side_by_side dar=checkpoints/dar-animals dart=checkpoints/dart-animals [--out F]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from dar.bench import alternate


def _percent(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"  # None: the demo classifier does not fit


def _parameters(pipe) -> int:
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() for m in modules for p in m.parameters())


def _sequential_steps(pipe) -> str:
    if hasattr(pipe, "tokenizer"):
        cfg = pipe.tokenizer.config
        return f"{cfg.num_tokens} AR + {cfg.num_steps} decoder"
    cfg = pipe.transformer.config
    if cfg.variant == "dart_ar":
        return f"{cfg.num_levels * cfg.tokens_per_level} (one per token)"
    if cfg.variant == "dart_fm":
        return f"{cfg.num_levels} + {cfg.num_levels}×{cfg.fm_steps} head"
    return f"{cfg.num_levels} (one per level)"


def _training_cpu_seconds(runs: str | None) -> float | None:
    if not runs:
        return None
    from dar.training.loop import read_jsonl

    total = 0.0
    for run in runs.split("+"):
        log = Path(run) / "logs" / "train_log.jsonl"
        if not log.is_file():
            raise FileNotFoundError(f"no training log at {log}: pass the run's output_dir after '@'")
        total += sum(r.get("cpu_seconds", 0.0) for r in read_jsonl(log) if "step" in r)
    return total


def parse_models(specs: list[str]) -> dict[str, tuple[str, str | None]]:
    models = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"expected NAME=FOLDER or NAME=FOLDER@RUN_DIR, got {spec!r}")
        folder, _, runs = rest.partition("@")
        if name in models:
            raise ValueError(f"the name {name!r} is given twice")
        models[name] = (folder, runs or None)
    return models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=FOLDER[@RUN_DIR[+RUN_DIR...]]")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        models = parse_models(args.models)
    except ValueError as error:
        parser.error(str(error))
    if args.per_class < 1 or args.repeats < 1:
        parser.error("--per-class and --repeats must be positive")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    from dar.evaluation import protocol
    from dar.loading import load_pipeline

    judges = protocol.build_judges()
    pipes = {}
    for name, (folder, _) in models.items():
        pipes[name] = load_pipeline(folder)
        pipes[name].set_progress_bar_config(disable=True)

    def timed(pipe):
        labels = list(range(8))
        return lambda: pipe(labels, generator=torch.Generator().manual_seed(0), output_type="pt")

    with torch.inference_mode():
        fns = {name: timed(pipe) for name, pipe in pipes.items()}
        alternate(fns, 1)  # warm-up
        times = {name: [t / 8 for t in timing.wall] for name, timing in alternate(fns, args.repeats).items()}

    rows = []
    for name, pipe in pipes.items():
        labels = protocol.class_balanced_labels(pipe.num_classes, args.per_class)
        with torch.inference_mode():
            images = protocol.sample_images(pipe, labels, generator=torch.Generator().manual_seed(args.seed))
        result = protocol.evaluate_samples(
            images, labels, judges, metrics=("fid", "pr"), generator=torch.Generator().manual_seed(args.seed)
        )
        accuracy = result["class_accuracy"] or {}
        rows.append(
            {
                "model": name,
                "folder": models[name][0],
                "class_accuracy": accuracy.get("overall"),
                "worst_class": min(accuracy.get("per_class", {}).values(), default=None),
                "fid": result["metrics"].get("fid"),
                "precision": result["metrics"].get("precision"),
                "recall": result["metrics"].get("recall"),
                "seconds_per_image": statistics.median(times[name]),
                "sequential_steps": _sequential_steps(pipe),
                "parameters": _parameters(pipe),
                "training_cpu_seconds": _training_cpu_seconds(models[name][1]),
            }
        )
    header = "| model | class acc. | worst class | FID | precision | recall | s/image (B=8) | sequential steps | params | training CPU-s |"
    lines = [header, "|" + " --- |" * 10]
    for r in rows:
        cpu = f"{r['training_cpu_seconds']:,.0f}" if r["training_cpu_seconds"] is not None else "—"
        lines.append(
            f"| {r['model']} | {_percent(r['class_accuracy'], 1)} | {_percent(r['worst_class'], 0)} | {r['fid']:.1f} "
            f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['seconds_per_image'] * 1000:.1f} ms "
            f"| {r['sequential_steps']} | {r['parameters'] / 1e6:.2f} M | {cpu} |"
        )
    print("\n".join(lines))
    print(
        f"({args.per_class} samples per class, seed {args.seed}, default settings; times: median of "
        f"{args.repeats} alternating repeats, fp32, {torch.get_num_threads()} threads)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
