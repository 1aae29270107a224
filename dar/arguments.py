"""Command-line flags shared by the ``dar`` command and the recipes: one flag per sampling option.

The flags are generated from :class:`llama_ar.options.SamplingOptions` and have no defaults of their own: an
option not given on the command line keeps the library's default (for temperature / top-k / top-p, the checkpoint's
``generation_config.json`` first), so defaults live in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from dar.engines import ENGINES
from dar.evaluation import DEMO_REFERENCE, FEATURE_KINDS, GENERATION_METRICS
from llama_ar.options import GENERATION_CONFIG_FIELDS, SamplingOptions

__all__ = [
    "add_eval_arguments",
    "add_generation_arguments",
    "add_judge_arguments",
    "add_export_arguments",
    "add_run_arguments",
    "check_run_arguments",
    "parse_labels",
    "positive",
    "sampling_kwargs",
]


def parse_labels(values: list[str]) -> list[int | str]:
    """``--classes`` values (space- or comma-separated) as class ids (digits) and names (anything else)."""
    items = [item.strip() for value in values for item in value.split(",") if item.strip()]
    return [int(item) if item.lstrip("-").isdigit() else item for item in items]


def check_run_arguments(args: argparse.Namespace) -> None:
    """The counts and sampling options of a generating command, checked before the model is loaded."""
    from tokenizer.config import check_noise_scale

    positive("--per-class", args.per_class)
    positive("--batch-size", args.batch_size)
    options = sampling_kwargs(args)
    if options.get("noise_scale") is not None:
        check_noise_scale(options.pop("noise_scale"))
    SamplingOptions.build(**options)


def positive(flag: str, value: int) -> int:
    """``value``, or a ValueError naming ``flag`` when it is below 1."""
    if value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}")
    return value


def _on_off(value: str) -> bool:
    choices = {"on": True, "off": False}
    if value not in choices:
        raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
    return choices[value]


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--cfg-scale``, ``--cfg-schedule``, … one flag per :class:`SamplingOptions` field."""
    hints = typing.get_type_hints(SamplingOptions)
    for field in dataclasses.fields(SamplingOptions):
        kind, flag = hints[field.name], "--" + field.name.replace("_", "-")
        default = f"default {field.default}"
        if field.name in GENERATION_CONFIG_FIELDS:
            default = f"default: the checkpoint's generation_config.json, else {field.default}"
        if typing.get_origin(kind) is typing.Literal:
            parser.add_argument(flag, choices=typing.get_args(kind), help=default)
        elif kind in (int, float):
            parser.add_argument(flag, type=kind, help=default)
        else:  # fast_linear: bool | None
            parser.add_argument(
                flag, type=_on_off, help="on or off (default: on for fp32 models on a non-Intel CPU)"
            )


def sampling_kwargs(args: argparse.Namespace) -> dict:
    """The sampling options given on the command line, as keyword arguments of a pipeline call."""
    names = [f.name for f in dataclasses.fields(SamplingOptions)] + ["noise_scale"]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """What samples are measured against (``dar.evaluation.protocol.build_judges``) and which metrics."""
    parser.add_argument(
        "--reference", default=DEMO_REFERENCE, help=f"image folder, npz, or {DEMO_REFERENCE!r}"
    )
    parser.add_argument(
        "--features", choices=FEATURE_KINDS, help="default: classifier for demo-test, else inception"
    )
    parser.add_argument(
        "--inception", help="local TorchScript Inception file (offline FID), e.g. default_1.pt"
    )
    parser.add_argument(
        "--classifier", help="demo-domain classifier folder (default: checkpoints/animal-classifier)"
    )
    parser.add_argument("--metrics", nargs="+", choices=GENERATION_METRICS, help="default: all that apply")
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="clamped to the number of samples")


def add_run_arguments(parser: argparse.ArgumentParser, per_class: int, batch_size: int) -> None:
    """What every generating command takes: the model, the classes, batching, sampling, seed, device, engine."""
    parser.add_argument("--checkpoint", help="pipeline folder or hub id (default: the shipped demo model)")
    parser.add_argument(
        "--classes", nargs="+", action="extend", help="class ids or names (default: every class)"
    )
    parser.add_argument("--per-class", type=int, default=per_class, help="images per class")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="images per batch (bounds memory)")
    add_generation_arguments(parser)
    parser.add_argument(
        "--noise-scale",
        type=float,
        help="D-AR: std of the decoder's starting noise (default: the tokenizer's noise_scale, 1 in the paper)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument("--engine", choices=ENGINES, help="what samples D-AR's codes (default: transformers)")
    parser.add_argument(
        "--gguf", help="with --engine llamacpp: a GGUF from `dar export-gguf` (default: f32 export)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """``dar eval``'s own flags: what to measure, against what, and where the samples and results go."""
    parser.add_argument(
        "--samples", help="evaluate these images instead: an npz, an image folder, or 'demo-train'"
    )
    parser.add_argument(
        "--reconstruction", action="store_true", help="measure the tokenizer on the reference"
    )
    parser.add_argument(
        "--levels", action="store_true", help="DART: held-out x0-MSE of every level on the reference"
    )
    add_judge_arguments(parser)
    parser.add_argument("--save-png", help="also write the samples as PNG files into this (empty) folder")
    parser.add_argument("--save-npz", help="also write the samples as an ADM-compatible .npz file")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete the images already in --save-png first"
    )
    parser.add_argument("--out", default="outputs/eval.json", help="JSON file of the results")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """``dar export-gguf``: the AR model to export, the file, its storage type."""
    parser.add_argument("--checkpoint", help="pipeline or ar_model folder (default: the shipped demo model)")
    parser.add_argument("--out", required=True, help="the .gguf file to write")
    parser.add_argument(
        "--dtype", choices=("f32", "f16", "q8_0"), default="f32", help="matrix storage (default f32)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
