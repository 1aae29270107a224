"""Convert the official D-AR checkpoints (showlab/D-AR) into a ``DARPipeline`` folder (reference §6, DESIGN §5).

1. :mod:`dar.convert.files` reads the official ``.pt`` files; the key mappings belong to the model packages
   (``tokenizer.official_keys``, ``llama_ar.official_keys``), the tokenizer configuration to
   :mod:`dar.convert.tokenizer_config`.
2. :func:`convert_official` assembles both models into a pipeline folder, written to a temporary directory and
   renamed into place. ``add_convert_arguments`` / ``run_convert`` provide the ``dar convert`` command.

``torch`` and the model packages are imported inside the functions, so ``dar --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "add_convert_arguments",
    "convert_official",
    "load_strict",
    "read_class_names",
    "refuse_inputs_inside",
    "run_convert",
]


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(strict=True)`` with a readable list of missing, unexpected and misshaped keys."""
    from llama_ar.checkpoint import key_report

    expected = {k: v.shape for k, v in model.state_dict().items()}
    problems = key_report(expected, {k: v.shape for k, v in state_dict.items()})
    if problems:
        raise ValueError(f"converted {what} weights do not fit the model ({problems}).")
    model.load_state_dict(state_dict, strict=True)


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (trailing blank lines ignored, inner ones refused)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise ValueError(
            f"{path}: blank lines {blank[:10]} would shift the class indices; one name per line."
        )
    return [line.strip() for line in lines]


def refuse_inputs_inside(out_dir: str | os.PathLike, inputs: Sequence[Any]) -> None:
    """Raise ``ValueError`` when an existing input file lies inside ``out_dir``, which the conversion replaces."""
    for source in inputs:
        source_path = Path(source).expanduser() if source is not None else None
        if (
            source_path
            and source_path.exists()
            and source_path.resolve().is_relative_to(Path(out_dir).resolve())
        ):
            raise ValueError(
                f"the input {source_path} lies inside the output folder {out_dir}, which would be replaced: "
                "write the pipeline to another folder"
            )


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_official(
    tokenizer_ckpt: str | os.PathLike,
    ar_ckpt: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer_config: Any = "tokenizer_v1",
    ar_preset: Any = None,
    num_classes: int = 1000,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the official tokenizer and GPT checkpoints into one ``DARPipeline`` folder.

    Args:
        tokenizer_ckpt: official tokenizer file (``D-AR-tokenizer_v1.pt``) or hub reference (``showlab/D-AR``
            takes ``D-AR-tokenizer_v1.pt``).
        ar_ckpt: official GPT file or hub reference (``showlab/D-AR/D-AR-L-360K.pt``).
        out_dir: folder to write (model_index.json, tokenizer/, ar_model/). Written to a temporary sibling and
            renamed, so an interrupted run leaves nothing half-written.
        tokenizer_config: preset name, ``TokenizerConfig`` or official YAML path.
        ar_preset: ``llama_ar`` preset name or ``ARConfig``; ``None`` infers it from the weight shapes.
        num_classes: number of classes of the GPT (its class table has ``num_classes + 1`` rows).
        class_names: optional names, one per class, stored with the AR model.
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        The output folder.
    """
    from dar.convert.files import OFFICIAL_TOKENIZER_FILE, load_official_state_dict
    from dar.convert.tokenizer_config import convert_tokenizer_state_dict, resolve_tokenizer_config
    from dar.pipeline import DARPipeline
    from llama_ar import ARConfig, VocabLayout, build_ar_model
    from llama_ar.official_keys import convert_ar_state_dict, infer_ar_preset, official_gpt_shapes
    from tokenizer import DARTokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(
            f"{out_dir} is a file, not a folder: choose another output folder (it is never replaced)"
        )
    config_file = tokenizer_config if isinstance(tokenizer_config, (str, os.PathLike)) else None
    refuse_inputs_inside(out_dir, [tokenizer_ckpt, ar_ckpt, config_file])
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it."
        )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names given for num_classes={num_classes}; give one per class."
        )

    # Everything cheap first (memory-mapped loads, shape checks, key mapping), then the two model builds.
    config = resolve_tokenizer_config(tokenizer_config)
    tok_sd = convert_tokenizer_state_dict(
        load_official_state_dict(tokenizer_ckpt, default_filename=OFFICIAL_TOKENIZER_FILE), config
    )
    ar_sd = load_official_state_dict(ar_ckpt)
    shapes = official_gpt_shapes(ar_sd)
    if shapes["codebook_size"] != config.codebook_size:
        raise ValueError(
            f"the GPT predicts {shapes['codebook_size']} codes but the tokenizer config has codebook_size="
            f"{config.codebook_size}; pair the checkpoints that were trained together."
        )
    preset = ar_preset if ar_preset is not None else infer_ar_preset(ar_sd, num_tokens=config.num_tokens)
    ar_config = ARConfig.from_preset(preset) if isinstance(preset, str) else preset
    if ar_config.num_tokens != config.num_tokens:
        ar_config = ar_config.replace(num_tokens=config.num_tokens)
    id2label = dict(enumerate(class_names)) if class_names is not None else None
    layout = VocabLayout(config.codebook_size, num_classes, id2label)
    ar_weights = convert_ar_state_dict(ar_sd, ar_config.to_llama_config(layout), layout)
    del ar_sd

    tokenizer = DARTokenizer.from_config(config)
    load_strict(tokenizer, tok_sd, "tokenizer")
    ar_model = build_ar_model(ar_config, layout)
    load_strict(ar_model, ar_weights, "AR model")
    del tok_sd, ar_weights

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        DARPipeline(tokenizer=tokenizer.eval(), ar_model=ar_model.eval()).save_pretrained(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (tokenizer %s, AR model %s)", out_dir, type(config).__name__, ar_config)
    return out_dir


# --------------------------------------------------------------------------------------------------- CLI
def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``dar convert`` options to ``parser``."""
    parser.add_argument("--tokenizer", required=True, help="official tokenizer .pt file or hub reference")
    parser.add_argument(
        "--ar", required=True, help="official GPT .pt file or hub reference (owner/repo/file)"
    )
    parser.add_argument("--out", required=True, help="output pipeline folder")
    parser.add_argument(
        "--tokenizer-config",
        default="tokenizer_v1",
        help="tokenizer preset name or official YAML (default tokenizer_v1)",
    )
    parser.add_argument("--class-names", default=None, help="text file with one class name per line")
    parser.add_argument("--num-classes", type=int, default=1000, help="classes of the GPT (default 1000)")
    parser.add_argument(
        "--ar-preset", default=None, help="AR preset (default: inferred from the weight shapes)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    return parser


def run_convert(args: argparse.Namespace) -> Path:
    """Run ``dar convert`` from parsed arguments; returns the written folder."""
    refuse_inputs_inside(args.out, [args.class_names])  # read before the folder is replaced: keep the file
    class_names = read_class_names(args.class_names) if args.class_names else None
    return convert_official(
        args.tokenizer,
        args.ar,
        args.out,
        tokenizer_config=args.tokenizer_config,
        ar_preset=args.ar_preset,
        num_classes=args.num_classes,
        class_names=class_names,
        overwrite=args.overwrite,
    )
