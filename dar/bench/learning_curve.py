"""Learning curve of the D-AR demo: class accuracy of the tokenizer's reconstructions and of the prior's samples
against training step, from the checkpoints a ``make demo-train`` run keeps (``train.keep_last``).

For every tokenizer checkpoint: its EMA weights (the export's) encode and decode the first ``--images`` test
silhouettes (fixed noise). Several tokenizer runs are stages of one training (a later stage starts from an
earlier one's export, ``model.init_from``): their steps add up, and when the first run given starts from an
export, that export is the curve's first point (at ``--step-offset``, the steps trained before it). For every
AR checkpoint: the pipeline of the run's exported tokenizer and that checkpoint's prior samples ``--per-class``
images per class at the pipeline's defaults (seed 0). Both are judged by the shipped demo classifier. Writes one JSON line per point on stdout and, with ``--png``, a two-panel plot.

Usage: ``python -m dar.bench.learning_curve --tokenizer-run runs/demo_tokenizer runs/demo_tokenizer2
--ar-run runs/demo_ar --png docs/demo_learning_curve.png``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _load_state(module: torch.nn.Module, checkpoint: Path, ema_of: torch.nn.Module | None = None) -> None:
    """The checkpoint's live weights (``model.safetensors``) and, with ``ema_of`` (the submodule the EMA averages),
    its EMA (``ema.safetensors``) on top with the live buffers, as the recipe's export does. Both loads are strict."""
    from safetensors.torch import load_file, load_model

    from dar.training.ema import build_ema, ema_model_for_export
    from tokenizer.checkpoint import key_report

    def strict_load(target: torch.nn.Module, path: Path) -> None:
        expected = {k: v.shape for k, v in target.state_dict().items()}
        problems = key_report(expected, {k: v.shape for k, v in load_file(path).items()})
        if problems:
            raise ValueError(f"{path} does not fit the run's config: {problems}")
        load_model(target, path, strict=True)

    strict_load(module, checkpoint / "model.safetensors")
    if ema_of is not None:
        ema = build_ema(ema_of, decay=0.5)  # the decay is unused: nothing is averaged here
        strict_load(ema, checkpoint / "ema.safetensors")
        averaged = ema_model_for_export(ema, ema_of)
        ema_of.load_state_dict(averaged.state_dict(), strict=True)


def _run_config(run: Path, kind: str):
    from dar.training.config import ARTrainingConfig, TokenizerTrainingConfig
    from dar.training.config_io import load_config

    return load_config(
        run / "config.yaml", {"tokenizer": TokenizerTrainingConfig, "ar": ARTrainingConfig}[kind]
    )


def _recon_accuracy(tok, images: torch.Tensor, labels: torch.Tensor, classifier) -> float:
    with torch.no_grad():
        rec = tok.eval().decode(tok.encode(images), generator=torch.Generator().manual_seed(1))
        return (classifier.predict(rec.clamp(-1, 1)) == labels).float().mean().item()


def tokenizer_curve(
    run: Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    classifier,
    offset: int = 0,
    with_init: bool = False,
) -> list[dict]:
    """Reconstruction accuracy per checkpoint of ``run`` at ``offset + step``; with ``with_init`` and a run that
    starts from an export (``model.init_from``), that export too, at ``offset``."""
    from dar.training.checkpoints import list_checkpoints
    from tokenizer import DARTokenizer, TokenizerLossModule, split_codebook

    cfg = _run_config(run, "tokenizer")

    def fresh():  # the architecture the run trained, as recipes/train_tokenizer.py builds it
        if not cfg.model.init_from:
            return DARTokenizer.from_preset(cfg.model.preset, **cfg.model.overrides)
        tok = DARTokenizer.from_pretrained(cfg.model.init_from)
        factor = cfg.model.split_codebook  # the checkpoint's weights replace the split codebook
        return split_codebook(tok, factor) if factor > 1 else tok

    rows = []
    if with_init and cfg.model.init_from:
        acc = _recon_accuracy(DARTokenizer.from_pretrained(cfg.model.init_from), images, labels, classifier)
        rows.append({"part": "tokenizer", "step": offset, "recon_class_accuracy": acc, "run": str(run)})
    for step, path in list_checkpoints(run / "checkpoints"):
        tok = fresh()
        _load_state(TokenizerLossModule(tok), path, tok if cfg.ema.enabled else None)
        acc = _recon_accuracy(tok, images, labels, classifier)
        rows.append(
            {"part": "tokenizer", "step": offset + step, "recon_class_accuracy": acc, "run": str(run)}
        )
    return rows


def ar_curve(run: Path, per_class: int, classifier) -> list[dict]:
    from dar.data.codes import read_codes_index
    from dar.pipeline import DARPipeline
    from dar.training.checkpoints import list_checkpoints
    from llama_ar import ARConfig, ARLossModule, VocabLayout, build_ar_model
    from tokenizer import DARTokenizer, with_noise_scale

    cfg = _run_config(run, "ar")
    tok = DARTokenizer.from_pretrained(cfg.model.tokenizer_path).eval()
    if cfg.model.noise_scale is not None:  # as the run's exported pipeline
        tok = with_noise_scale(tok, cfg.model.noise_scale)
    names = read_codes_index(cfg.data.path).class_names
    layout = VocabLayout(tok.config.codebook_size, len(names), dict(enumerate(names)))
    labels = [c for c in range(len(names)) for _ in range(per_class)]
    config = ARConfig.from_preset(cfg.model.preset, num_tokens=tok.config.num_tokens, **cfg.model.overrides)
    rows = []
    for step, path in list_checkpoints(run / "checkpoints"):
        model = build_ar_model(config, layout)
        module = ARLossModule(model, class_dropout=config.class_dropout, token_dropout=config.token_dropout)
        _load_state(module, path)
        pipe = DARPipeline(tokenizer=tok, ar_model=model.eval())
        with torch.no_grad():
            out = pipe(labels, generator=torch.Generator().manual_seed(0), output_type="pt").images
        acc = (classifier.predict(out * 2 - 1) == torch.tensor(labels)).float().mean().item()
        rows.append({"part": "ar", "step": step, "sample_class_accuracy": acc, "samples": len(labels)})
    return rows


# the accuracy each part's rows carry (tokenizer_curve and ar_curve write them, plot and --rows read them)
ACCURACY_KEYS = {"tokenizer": "recon_class_accuracy", "ar": "sample_class_accuracy"}


def plot(rows: list[dict], path: Path) -> None:
    """Two panels (tokenizer steps | AR steps), accuracy 0–100 %, drawn with PIL (no plotting dependency)."""
    from PIL import Image, ImageDraw

    width, height, pad = 300, 220, 40
    canvas = Image.new("RGB", (2 * width, height), "white")
    draw = ImageDraw.Draw(canvas)
    panels = [
        ("tokenizer: reconstructions", "tokenizer", (200, 40, 40)),
        ("prior: samples", "ar", (40, 40, 200)),
    ]
    for i, (title, part, colour) in enumerate(panels):
        key = ACCURACY_KEYS[part]
        x0, points = i * width, [(r["step"], r[key]) for r in rows if r["part"] == part]
        left, right, top, bottom = x0 + pad, x0 + width - 12, 24, height - pad + 10
        draw.text((x0 + pad, 6), title, fill="black")
        draw.rectangle([left, top, right, bottom], outline="black")
        for level in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = bottom - level * (bottom - top)
            draw.line([left, y, right, y], fill=(220, 220, 220))
            draw.text((x0 + 4, y - 6), f"{level:.0%}", fill="black")
        if not points:
            continue
        last = max(s for s, _ in points)
        xy = [(left + s / last * (right - left), bottom - a * (bottom - top)) for s, a in points]
        draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((left, bottom + 6), "0", fill="black")
        draw.text((right - 40, bottom + 6), f"step {last}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv: list[str] | None = None) -> None:
    from dar.demo import DEMO_CLASSIFIER, shipped
    from dar.demo.animal_shapes import animal_shapes_uint8
    from dar.demo.classifier import ShapeClassifier
    from dar.images import from_uint8

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokenizer-run",
        type=Path,
        nargs="+",
        help="train_tokenizer output_dirs with checkpoints/, in stage order (each continues the previous)",
    )
    parser.add_argument(
        "--step-offset",
        type=int,
        default=0,
        help="tokenizer steps trained before the first --tokenizer-run (a stage whose run is gone)",
    )
    parser.add_argument("--ar-run", type=Path, help="a train_llama_ar output_dir with checkpoints/")
    parser.add_argument("--images", type=int, default=1000, help="test images for the reconstructions")
    parser.add_argument("--per-class", type=int, default=20, help="samples per class for each AR checkpoint")
    parser.add_argument("--png", type=Path, help="write the two-panel plot here")
    parser.add_argument(
        "--rows",
        type=Path,
        nargs="+",
        help="JSON lines printed by earlier runs of this command (e.g. of a run folder since deleted): plotted with "
        "the new rows, not printed again",
    )
    args = parser.parse_args(argv)
    if args.tokenizer_run is None and args.ar_run is None and args.rows is None:
        parser.error("give --tokenizer-run, --ar-run, --rows or several of them")
    if args.rows and args.png is None:
        parser.error("--rows only feeds the plot: add --png FILE")
    if args.images <= 0 or args.per_class <= 0:
        parser.error("--images and --per-class must be positive")
    if args.step_offset < 0:
        parser.error(f"--step-offset must be >= 0, got {args.step_offset}")
    for run in [*(args.tokenizer_run or []), args.ar_run]:
        if run is not None and not (run / "checkpoints").is_dir():
            parser.error(f"{run} has no checkpoints/ folder: pass a training run's output_dir")
    earlier = [row for file in args.rows or [] for row in _read_rows(file, parser)]
    rows = []
    if args.tokenizer_run is not None or args.ar_run is not None:
        classifier = ShapeClassifier.from_pretrained(shipped(DEMO_CLASSIFIER, "demo classifier")).eval()
    if args.tokenizer_run is not None:
        images, labels = animal_shapes_uint8("test")
        images = from_uint8(images[: args.images])
        offset, labels = args.step_offset, torch.tensor(labels[: args.images])
        for i, run in enumerate(args.tokenizer_run):
            rows += tokenizer_curve(run, images, labels, classifier, offset=offset, with_init=i == 0)
            offset += _run_config(run, "tokenizer").train.max_steps
    if args.ar_run is not None:
        rows += ar_curve(args.ar_run, args.per_class, classifier)
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.png is not None:
        plot(earlier + rows, args.png)


def _read_rows(file: Path, parser: argparse.ArgumentParser) -> list[dict]:
    if not file.is_file():
        parser.error(f"--rows: no file at {file}")
    rows = []
    for line in filter(str.strip, file.read_text().splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or ACCURACY_KEYS.get(row.get("part")) not in row or "step" not in row:
            parser.error(
                f"--rows: {file} has a line that is not a row printed by this command: {line[:80]!r}"
            )
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
