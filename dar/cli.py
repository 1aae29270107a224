"""The ``dar`` command: sample, stream, layout-control, convert official weights, benchmark.

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


def _sampling_kwargs(args) -> dict:
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
    images = pipe(labels, generator=generator, output_type="np", **_sampling_kwargs(args)).images
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
    for step in pipe.stream(labels, generator=generator, output_type="np", **_sampling_kwargs(args)):
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
    reference = pipe(reference_label, generator=generator, output_type="pt", **_sampling_kwargs(args)).images
    rows = [np.repeat(reference.permute(0, 2, 3, 1).cpu().numpy(), len(labels), axis=0)]
    for tokens in args.layout_tokens:
        out = pipe(
            labels,
            generator=torch.Generator(pipe.device).manual_seed(args.seed + 1),
            layout=reference * 2 - 1,
            layout_tokens=tokens,
            output_type="np",
            **_sampling_kwargs(args),
        )
        rows.append(out.images)
    grid = np.concatenate(rows, axis=0)
    path = _save_grid(grid, len(labels), Path(args.out) / "layout.png")
    print(f"wrote {path}  (row 0: reference; then one row per layout_tokens in {args.layout_tokens})")


def cmd_convert(args) -> None:
    from dar.convert import run_convert

    run_convert(args)


def cmd_bench(args) -> None:
    from dar.bench.__main__ import main as bench_main

    bench_main((["--quick"] if args.quick else []) + ["--out", args.out])


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="pipeline folder or hub id (default: the shipped demo model)")
    parser.add_argument("--classes", nargs="*", help="class ids or names (default: every class)")
    parser.add_argument("--per-class", type=int, default=4, help="images per class")
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--cfg-schedule", choices=("constant", "linear"), default="constant")
    parser.add_argument("--cfg-scale-start", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument("--out", default="outputs", help="output folder")
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
