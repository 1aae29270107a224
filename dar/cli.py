"""The ``dar`` command: sample, stream, layout-control, convert official weights, evaluate, export a GGUF, benchmark.

Thin commands over the library; heavy libraries are imported inside them, so ``dar --help`` answers at once.
Errors the project raises (bad arguments, missing files, damaged checkpoints) print one line that names the
fix and exit with status 2; set ``DAR_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dar.arguments import (
    add_eval_arguments,
    add_export_arguments,
    add_run_arguments,
    check_run_arguments,
    parse_labels,
    positive,
    sampling_kwargs,
)
from dar.demo import DEMO_PIPELINE, shipped
from dar.engines import engine_of

logger = logging.getLogger("dar")

# what the project raises with a message naming the fix (OSError covers missing, existing and unwritable paths)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)


def _load_pipeline(args):
    import torch

    from dar.loading import load_pipeline
    from dar.pipeline import DARPipeline

    if args.quiet:
        from diffusers.utils.logging import disable_progress_bar as quiet_diffusers
        from transformers.utils.logging import disable_progress_bar as quiet_transformers

        quiet_diffusers(), quiet_transformers()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device} is not a torch device: pass cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} but no CUDA device is available: pass --device cpu")
    engine = engine_of(getattr(args, "engine", None), getattr(args, "gguf", None), device)
    pipe = load_pipeline(args.checkpoint or shipped(DEMO_PIPELINE, "demo model"), engine=engine).to(device)
    if getattr(args, "noise_scale", None) is not None and not isinstance(pipe, DARPipeline):
        raise ValueError(
            f"--noise-scale is an option of D-AR's decoder, which {type(pipe).__name__} has not: drop it"
        )
    pipe.set_progress_bar_config(disable=args.quiet)
    return pipe


def _labels_for(pipe, args) -> list[int]:
    positive("--per-class", args.per_class)
    labels = parse_labels(args.classes) if args.classes else list(range(pipe.num_classes))
    return [i for i in pipe.check_class_labels(labels).tolist() for _ in range(args.per_class)]


def _generator(pipe, seed: int):
    import torch

    return torch.Generator(pipe.device).manual_seed(seed)


def _generate(pipe, labels: list[int], seed: int, args, **call) -> torch.Tensor:  # noqa: F821
    """Images in [-1, 1] of ``labels`` with the command line's sampling options and one seeded generator."""
    images = pipe(labels, generator=_generator(pipe, seed), output_type="pt", **sampling_kwargs(args), **call)
    return images.images * 2 - 1


def cmd_sample(args) -> None:
    from dar.images import prepare_output_file, save_grid

    path = prepare_output_file(Path(args.out) / f"{args.prefix}samples.png")
    check_run_arguments(args)
    pipe = _load_pipeline(args)
    labels = _labels_for(pipe, args)
    save_grid(
        _generate(pipe, labels, args.seed, args, batch_size=positive("--batch-size", args.batch_size)),
        path,
        args.per_class,
    )
    print(f"wrote {path}  ({len(labels)} images, {args.per_class} per class, one class per row)")


def cmd_stream(args) -> None:
    import torch

    from dar.images import prepare_output_file, save_gif, save_grid

    strip_path = prepare_output_file(Path(args.out) / f"{args.prefix}stream_strip.png")
    gif_path = prepare_output_file(Path(args.out) / f"{args.prefix}stream.gif")
    check_run_arguments(args)
    pipe = _load_pipeline(args)
    labels, generator = _labels_for(pipe, args), _generator(pipe, args.seed)
    size, batches = positive("--batch-size", args.batch_size), []
    for start in range(0, len(labels), size):
        chunk = pipe.stream(
            labels[start : start + size], generator=generator, output_type="pt", **sampling_kwargs(args)
        )
        batches.append(torch.stack([step.preview * 2 - 1 for step in chunk], dim=1))  # (b, steps, 3, H, W)
    previews = torch.cat(batches)  # a row per image, a column per step
    save_grid(previews.flatten(0, 1), strip_path, previews.shape[1])
    save_gif(list(previews.unbind(1)), gif_path, nrow=min(len(labels), 10))
    print(f"wrote {strip_path}  (rows: images, columns: the {previews.shape[1]} streamed steps)")
    print(f"wrote {gif_path}")


def cmd_layout(args) -> None:
    import torch

    from dar.images import prepare_output_file, save_grid

    if args.reference_class is None:
        raise ValueError("dar layout needs --reference-class (a class id or name to draw the reference from)")
    path = prepare_output_file(Path(args.out) / f"{args.prefix}layout.png")
    check_run_arguments(args)
    pipe = _load_pipeline(args)
    labels, batch_size = _labels_for(pipe, args), positive("--batch-size", args.batch_size)
    reference = _generate(
        pipe, pipe.check_class_labels(parse_labels([args.reference_class])).tolist(), args.seed, args
    )
    rows = [reference.expand(len(labels), -1, -1, -1)]
    rows += [
        _generate(pipe, labels, args.seed + 1, args, layout=reference, layout_tokens=n, batch_size=batch_size)
        for n in args.layout_tokens
    ]
    save_grid(torch.cat(rows), path, len(labels))
    print(f"wrote {path}  (row 0: reference; then one row per layout_tokens in {args.layout_tokens})")


def cmd_convert(args) -> None:
    from dar.convert import run_convert

    print(f"wrote {run_convert(args)}")


def cmd_eval(args) -> None:
    import json

    from dar.evaluation import diagnostics, protocol
    from dar.images import prepare_image_folder, prepare_output_file
    from dar.loading import class_names, image_size

    out = prepare_output_file(args.out, ".json")  # every output is checked before minutes of sampling
    npz = prepare_output_file(args.save_npz, ".npz") if args.save_npz else None
    check_run_arguments(args)
    positive("--kid-subset-size", args.kid_subset_size)
    png = prepare_image_folder(args.save_png, overwrite=args.overwrite) if args.save_png else None
    judges = protocol.build_judges(
        args.reference, args.features, inception=args.inception, classifier=args.classifier
    )
    settings = {
        k: getattr(args, k) for k in ("checkpoint", "samples", "inception", "per_class", "seed", "batch_size")
    }
    settings.update(features=judges.features, classifier=str(judges.classifier_path or "") or None)
    if args.samples:
        settings["checkpoint"] = None  # the images come from the files, not from a model
    if args.levels:
        pipe = _load_pipeline(args)
        results = diagnostics.evaluate_levels(pipe, judges, batch_size=args.batch_size, seed=args.seed)
        text = diagnostics.format_levels(results)
    elif args.reconstruction:
        pipe = _load_pipeline(args)
        if getattr(pipe, "tokenizer", None) is None:
            raise ValueError(
                f"--reconstruction measures the tokenizer of a D-AR pipeline, but {args.checkpoint} holds a "
                f"{type(pipe).__name__}: use --levels for DART"
            )
        results = diagnostics.evaluate_reconstruction(
            pipe.tokenizer, judges.to(pipe.device), batch_size=args.batch_size, seed=args.seed
        )
        text = diagnostics.format_reconstruction(results)
    else:
        if args.samples:  # existing images: an npz, a folder, or the real demo-train baseline
            images, labels = protocol.load_samples(
                args.samples, per_class=positive("--per-class", args.per_class)
            )
            labels, names = labels or [], protocol.sample_names(args.samples)
        else:
            pipe = _load_pipeline(args)
            judges.check_size(image_size(pipe))
            labels = _labels_for(pipe, args)
            images = protocol.sample_images(
                pipe,
                labels,
                batch_size=positive("--batch-size", args.batch_size),
                generator=_generator(pipe, args.seed),
                **sampling_kwargs(args),
            )
            names = class_names(pipe)
            settings["sampling"] = {**getattr(pipe, "sampling_defaults", {}), **sampling_kwargs(args)}
            judges.to(pipe.device)
        results = protocol.run_evaluation(
            images,
            labels,
            judges,
            class_names=names,
            save_png=png,
            save_npz=npz,
            seed=args.seed,
            metrics=args.metrics,
            kid_subset_size=args.kid_subset_size,
        )
        text = protocol.format_results(results)
    results["settings"] = settings
    out.write_text(json.dumps(results, indent=2, allow_nan=False, default=str))
    print(text)
    print(f"wrote {out}")


def cmd_export_gguf(args) -> None:
    from dar.images import prepare_output_file
    from llama_ar import export_gguf

    out = prepare_output_file(args.out, ".gguf")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists: pass another --out, or --overwrite to replace it")
    checkpoint = args.checkpoint or shipped(DEMO_PIPELINE, "demo model")
    print(f"wrote {export_gguf(checkpoint, out, dtype=args.dtype)}")


def cmd_bench(args) -> None:
    from dar.bench.__main__ import main as bench_main

    bench_main((["--quick"] if args.quick else []) + ["--out", args.out])


def build_parser() -> argparse.ArgumentParser:
    from dar.convert import add_convert_arguments

    parser = argparse.ArgumentParser(
        prog="dar", description="D-AR and DART: diffusion via autoregressive models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("sample", cmd_sample, "sample a grid of class-conditional images"),
        ("stream", cmd_stream, "a preview after every step, as a strip and a GIF"),
        ("layout", cmd_layout, "layout control: keep a reference's first codes"),
    ):
        p = sub.add_parser(name, help=help_text)
        add_run_arguments(p, per_class=4 if name == "sample" else 1, batch_size=32)
        p.add_argument("--out", default="outputs", help="output folder")
        p.add_argument(
            "--prefix", default="", help="prefix of the file names (e.g. dart_ -> dart_samples.png)"
        )
        p.set_defaults(func=func)
        if name == "layout":
            p.add_argument("--reference-class", help="class of the generated reference image")
            p.add_argument("--layout-tokens", type=int, nargs="+", default=[8, 16, 32])
    add_convert_arguments(
        sub.add_parser("convert", help="convert the released official D-AR weights")
    ).set_defaults(func=cmd_convert)
    p = sub.add_parser("eval", help="class-balanced samples → FID/IS/KID/precision/recall (+ class accuracy)")
    add_run_arguments(p, per_class=100, batch_size=100)
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export-gguf", help="write the D-AR prior as a GGUF file for llama.cpp (serve extra)")
    add_export_arguments(p)
    p.set_defaults(func=cmd_export_gguf)
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
    try:
        args.func(args)
    except USER_ERRORS as error:
        if os.environ.get("DAR_TRACEBACK"):
            raise
        print(f"dar {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
