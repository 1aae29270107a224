"""The ``dar`` command: sample, stream, layout-control, convert official weights, evaluate, benchmark.

Heavy libraries are imported inside the sub-commands so that ``dar --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("dar")

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dar-animals"


def _parse_labels(values: list[str]) -> list[int | str]:
    labels: list[int | str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item:
                labels.append(int(item) if item.lstrip("-").isdigit() else item)
    return labels


def _load_pipeline(args):
    import torch

    from dar.pipeline import DARPipeline

    checkpoint = Path(args.checkpoint) if args.checkpoint else DEMO_CHECKPOINT
    if not checkpoint.exists():
        if args.checkpoint is None:
            raise SystemExit(
                f"The shipped demo model is missing at {checkpoint}. Re-clone the repository, or train it with "
                "`make demo-train`, or pass --checkpoint DIR."
            )
        if checkpoint.is_absolute() or len(checkpoint.parts) != 2:
            raise SystemExit(f"No pipeline folder at {checkpoint}: pass a folder written by save_pretrained.")
        logger.info("%s is not a local folder; trying it as a Hugging Face Hub id", checkpoint)
    if checkpoint.exists() and not (checkpoint / "model_index.json").is_file():
        raise SystemExit(
            f"{checkpoint} has no model_index.json: pass a folder written by DARPipeline.save_pretrained."
        )
    pipe = DARPipeline.from_pretrained(str(checkpoint))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=args.quiet)
    return pipe


def _labels_for(pipe, args) -> list[int]:
    labels = _parse_labels(args.classes) if args.classes else list(range(pipe.layout.num_classes))
    try:
        ids = [pipe.get_label_ids(c)[0] if isinstance(c, str) else c for c in labels]
        pipe._class_labels(ids)  # range check with the pipeline's own message
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return [i for i in ids for _ in range(args.per_class)]


def sampling_kwargs(args) -> dict:
    """The pipeline keyword arguments of the options added by :func:`add_generation_arguments`."""
    return {
        "cfg_scale": args.cfg_scale,
        "cfg_schedule": args.cfg_schedule,
        "cfg_scale_start": args.cfg_scale_start,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }


def _save_grid(images, nrow: int, path: Path) -> Path:
    from PIL import Image

    from dar.pipeline import make_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, nrow)).save(path)
    return path


def cmd_sample(args) -> None:
    import torch

    pipe = _load_pipeline(args)
    labels = _labels_for(pipe, args)
    generator = torch.Generator(pipe.device).manual_seed(args.seed)
    images = pipe(labels, generator=generator, output_type="np", **sampling_kwargs(args)).images
    path = _save_grid(images, args.per_class, Path(args.out) / "samples.png")
    print(f"wrote {path}  ({len(labels)} images, {args.per_class} per class, one class per row)")


def cmd_stream(args) -> None:
    import numpy as np
    import torch
    from PIL import Image

    pipe = _load_pipeline(args)
    labels = _labels_for(pipe, args)
    generator = torch.Generator(pipe.device).manual_seed(args.seed)
    previews = []
    for step in pipe.stream(labels, generator=generator, output_type="np", **sampling_kwargs(args)):
        previews.append(step.preview)
        logger.info(
            "step %d  t=%.3f  codes=%d  ar=%.2fs decode=%.2fs elapsed=%.2fs",
            step.index,
            step.t,
            step.codes.shape[1],
            step.ar_seconds,
            step.decode_seconds,
            step.elapsed,
        )
    # strip: one row per image, one column per step
    strip = np.stack(previews, axis=1).reshape(-1, *previews[0].shape[1:])
    out = Path(args.out)
    strip_path = _save_grid(strip, len(previews), out / "stream_strip.png")
    frames = []
    for preview in previews:
        grid = _save_grid(preview, min(len(labels), 10), out / ".frame.png")
        frames.append(Image.open(grid).convert("RGB").copy())
    (out / ".frame.png").unlink()
    gif_path = out / "stream.gif"
    frames[0].save(gif_path, save_all=True, append_images=frames[1:] + [frames[-1]] * 3, duration=400, loop=0)
    print(f"wrote {strip_path}  (rows: images, columns: the {len(previews)} streamed steps)")
    print(f"wrote {gif_path}")


def cmd_layout(args) -> None:
    import numpy as np
    import torch

    pipe = _load_pipeline(args)
    labels = _labels_for(pipe, args)
    generator = torch.Generator(pipe.device).manual_seed(args.seed)
    if args.reference_class is None:
        raise SystemExit(
            "dar layout needs --reference-class (a class id or name to draw the reference from)."
        )
    reference_label = _parse_labels([args.reference_class])
    reference = pipe(reference_label, generator=generator, output_type="pt", **sampling_kwargs(args)).images
    rows = [np.repeat(reference.permute(0, 2, 3, 1).cpu().numpy(), len(labels), axis=0)]
    for tokens in args.layout_tokens:
        out = pipe(
            labels,
            generator=torch.Generator(pipe.device).manual_seed(args.seed + 1),
            layout=reference * 2 - 1,
            layout_tokens=tokens,
            output_type="np",
            **sampling_kwargs(args),
        )
        rows.append(out.images)
    grid = np.concatenate(rows, axis=0)
    path = _save_grid(grid, len(labels), Path(args.out) / "layout.png")
    print(f"wrote {path}  (row 0: reference; then one row per layout_tokens in {args.layout_tokens})")


def cmd_convert(args) -> None:
    from dar.convert import run_convert

    run_convert(args)


DEMO_CLASSIFIER = Path(__file__).resolve().parents[1] / "checkpoints" / "animal-classifier"


def cmd_eval(args) -> None:
    import json

    import torch

    from dar import evaluation, metrics

    features = args.features or ("classifier" if args.reference == evaluation.DEMO_REFERENCE else "inception")
    classifier_path = Path(args.classifier) if args.classifier else DEMO_CLASSIFIER
    try:  # reference and extractor first: their errors come before minutes of sampling
        reference = evaluation.load_reference(args.reference)
        classifier = None
        if features == "classifier" or args.classifier or DEMO_CLASSIFIER.is_dir():
            from dar.classifier import ShapeClassifier

            if not (classifier_path / "config.json").is_file():
                raise FileNotFoundError(
                    f"no classifier at {classifier_path}: pass --classifier DIR (written by "
                    "recipes/train_classifier.py)"
                )
            classifier = ShapeClassifier.from_pretrained(str(classifier_path)).eval()
        feature = evaluation.build_feature_extractor(
            features, inception_path=args.inception, classifier=classifier
        )
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise SystemExit(str(error)) from None
    if args.reconstruction:
        _eval_reconstruction(args, reference, feature, features)
        return
    if args.samples:  # evaluate existing images (an npz, a folder, or the real demo-train baseline)
        try:
            images, labels = evaluation.load_samples(args.samples, per_class=args.per_class)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(str(error)) from None
        names = None
        if labels is not None and classifier is not None:
            from dar.data import ANIMAL_SHAPE_CLASSES

            names = list(ANIMAL_SHAPE_CLASSES)
        labels = labels if labels is not None else []
    else:
        pipe = _load_pipeline(args)
        size = pipe.tokenizer.config.image_size
        if reference.images is not None and tuple(reference.images.shape[-2:]) != (size, size):
            raise SystemExit(
                f"the reference images are {tuple(reference.images.shape[-2:])} px but the model generates "
                f"{size}×{size}: pass a reference at the model's resolution"
            )
        for module in (feature, classifier):
            if module is not None:
                module.to(pipe.device)
        labels = _labels_for(pipe, args)
        generator = torch.Generator(pipe.device).manual_seed(args.seed)
        images = evaluation.sample_images(
            pipe, labels, batch_size=args.batch_size, generator=generator, **sampling_kwargs(args)
        )
        names = [pipe.id2label.get(i, str(i)) for i in range(pipe.layout.num_classes)]
    if args.save_png:
        metrics.save_pngs(images, args.save_png)
    if args.save_npz:
        metrics.save_npz(images, args.save_npz, labels=torch.tensor(labels) if labels else None)
    try:
        results = evaluation.evaluate_samples(
            images, labels, reference, feature, metrics=args.metrics, class_names=names,
            classifier=classifier if labels else None,
            kid_subset_size=args.kid_subset_size, generator=torch.Generator().manual_seed(args.seed),
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(str(error)) from None
    results["settings"] = {
        "checkpoint": None if args.samples else str(args.checkpoint or DEMO_CHECKPOINT),
        "samples": args.samples,
        "features": features,
        "inception": args.inception,
        "classifier": str(classifier_path) if classifier is not None else None,
        "num_samples": int(images.shape[0]),
        "per_class": args.per_class,
        "seed": args.seed,
        "batch_size": args.batch_size,
        **sampling_kwargs(args),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, allow_nan=False))
    print(evaluation.format_results(results))
    print(f"wrote {out}")


def _eval_reconstruction(args, reference, feature, features: str) -> None:
    """`dar eval --reconstruction`: the pipeline's tokenizer encodes and decodes the reference images."""
    import json

    import torch

    from dar import metrics

    if reference.images is None:
        raise SystemExit(
            "--reconstruction needs reference images: a folder, an npz with arr_0, or demo-test (not mu/sigma)"
        )
    pipe = _load_pipeline(args)
    size = pipe.tokenizer.config.image_size
    if tuple(reference.images.shape[-2:]) != (size, size):
        raise SystemExit(
            f"the reference images are {tuple(reference.images.shape[-2:])} px but the tokenizer takes "
            f"{size}×{size}: pass images at the tokenizer's resolution"
        )
    feature.to(pipe.device)
    images = reference.images.float() / 127.5 - 1  # uint8 → [-1, 1]; to_uint8 maps it back exactly
    generator = torch.Generator(pipe.device).manual_seed(args.seed)
    scores = metrics.reconstruction_metrics(
        pipe.tokenizer, images, generator=generator, feature=feature, batch_size=args.batch_size
    )
    results = {
        "reconstruction": scores,
        "reference": reference.description,
        "settings": {"checkpoint": str(args.checkpoint or DEMO_CHECKPOINT), "features": features,
                     "seed": args.seed, "batch_size": args.batch_size},
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"reconstruction of {reference.description} ({scores['num_images']} images)")
    for key in ("psnr", "ssim", "rfid"):
        if key in scores:
            print(f"  {key:<8} {scores[key]:10.4f}")
    print(f"wrote {out}")


def cmd_bench(args) -> None:
    from dar.bench.__main__ import main as bench_main

    bench_main((["--quick"] if args.quick else []) + ["--out", args.out])


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling knobs read by ``sampling_kwargs`` (also used by recipes/evaluate.py)."""
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--cfg-schedule", choices=("constant", "linear"), default="constant")
    parser.add_argument("--cfg-scale-start", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="pipeline folder or hub id (default: the shipped demo model)")
    parser.add_argument("--classes", nargs="*", help="class ids or names (default: every class)")
    parser.add_argument("--per-class", type=int, default=4, help="images per class")
    add_generation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument("--out", default="outputs", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    # literals, not imports of dar.metrics/dar.evaluation: `dar --help` must not import torch (test_metrics checks
    # that they equal GENERATION_METRICS, FEATURE_KINDS and DEMO_REFERENCE)
    demo_reference, feature_kinds, generation_metrics = (
        "demo-test",
        ("inception", "classifier"),
        ("fid", "is", "kid", "pr"),
    )
    parser.add_argument("--checkpoint", help="pipeline folder or hub id (default: the shipped demo model)")
    parser.add_argument("--samples", help="evaluate these images instead of sampling: an npz from --save-npz, "
                        "an image folder, or 'demo-train' (real training images, --per-class of each class)")  # fmt: skip
    parser.add_argument("--reconstruction", action="store_true", help="measure the tokenizer instead: "
                        "encode + decode the reference images; PSNR, SSIM and rFID on --features")  # fmt: skip
    parser.add_argument("--classes", nargs="*", help="class ids or names (default: every class)")
    parser.add_argument("--per-class", type=int, default=100, help="images per class (class-balanced)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per pipeline call")
    add_generation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument("--reference", default=demo_reference,
                        help=f"image folder, npz (arr_0 images and/or mu/sigma) or {demo_reference!r} "
                        "(the real animal-shape-mnist test split)")  # fmt: skip
    parser.add_argument("--features", choices=feature_kinds,
                        help=f"feature network (default: classifier for {demo_reference}, else inception)")  # fmt: skip
    parser.add_argument("--inception", help="local TorchScript Inception file (e.g. default_1.pt); "
                        "without it the torchmetrics Inception is used, which downloads its weights")  # fmt: skip
    parser.add_argument(
        "--classifier", help="demo-domain classifier folder (default: checkpoints/animal-classifier)"
    )
    parser.add_argument("--metrics", nargs="+", choices=generation_metrics,
                        help="default: all that the features and the reference allow")  # fmt: skip
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="clamped to the number of samples")
    parser.add_argument("--save-png", help="also write the samples as PNG files into this folder")
    parser.add_argument("--save-npz", help="also write the samples as an ADM-compatible npz (arr_0, labels)")
    parser.add_argument("--out", default="outputs/eval.json", help="JSON file of the results")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dar", description="D-AR: diffusion via autoregressive models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="sample a grid of class-conditional images")
    _add_sampling_arguments(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("stream", help="stream: a preview after every code group, as a strip and a GIF")
    _add_sampling_arguments(p)
    p.set_defaults(func=cmd_stream, per_class=1)

    p = sub.add_parser("layout", help="layout control: keep a reference's first codes, change the class")
    _add_sampling_arguments(p)
    p.add_argument("--reference-class", help="class of the generated reference image")
    p.add_argument("--layout-tokens", type=int, nargs="+", default=[8, 16, 32])
    p.set_defaults(func=cmd_layout, per_class=1)

    p = sub.add_parser("convert", help="convert the released official D-AR weights into a pipeline folder")
    from dar.convert import add_convert_arguments

    add_convert_arguments(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("eval", help="sample class-balanced images and compute FID/IS/KID/precision/recall")
    _add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="run the benchmarks (same as `make bench`)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="bench/results.json")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(message)s"
    )
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
