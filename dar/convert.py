"""Convert the official D-AR checkpoints (showlab/D-AR) into a ``DARPipeline`` folder (reference §6, DESIGN §5).

1. :mod:`dar.official_weights` reads the official ``.pt`` files and maps the GPT onto a stock ``LlamaForCausalLM``.
2. The tokenizer keys are mapped by the tokenizer package itself (``tokenizer.official_keys.official_to_ours``);
   :func:`tokenizer_config_from_official_yaml` reads an official ``configs/tokenizer_v1.yaml``.
3. :func:`convert_official` assembles both models into a pipeline folder, written to a temporary directory and
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

OFFICIAL_TOKENIZER_FILE = "D-AR-tokenizer_v1.pt"

# --------------------------------------------------------------------------------------------- tokenizer
_OFFICIAL_MODEL_KEYS = set(
    "encoder_patch_size num_encoder_layers num_decoder_layers query_low_rank encoder_dim decoder_dim vq_dim "
    "vq_codebook_size num_denoising_steps num_query_groups num_all_queries queries_per_step vq_enable "
    "rope_base_len sampling_resolution output_resolution diff_decoder".split()
)
_OFFICIAL_DECODER_KEYS = set(
    "in_dim dim cond_dim patch_size depth data_std time_shift mlp_head share_time_encoding repa_layer "
    "rope_base_len out_dim cfg grad_checkpointing".split()  # the last three are unused or training-only
)


def tokenizer_config_from_official(model: Mapping[str, Any]) -> Any:
    """Map an official tokenizer ``model:`` dict (with its ``diff_decoder:`` block) onto a ``TokenizerConfig``.

    Official defaults apply to absent keys (``rope_base_len`` 10000, ``sampling_resolution`` 256,
    ``repa_layer`` 8, ``query_low_rank`` true); constants the official code hard-codes become fields (head dim
    64, MLP ratio 4, query rank 8, 1024-row position tables, REPA head 2048 → 768 on a 16×16 grid).

    Raises:
        ValueError: an unknown key, or an official option our tokenizer does not implement (named).
    """
    from tokenizer import TokenizerConfig

    top, dec = model, model.get("diff_decoder") or {}
    unknown = sorted(set(top) - _OFFICIAL_MODEL_KEYS) + [
        f"diff_decoder.{k}" for k in sorted(set(dec) - _OFFICIAL_DECODER_KEYS)
    ]
    if unknown:
        raise ValueError(f"unknown official tokenizer settings {unknown}.")
    groups, tokens, rope = top["num_query_groups"], top["num_all_queries"], top.get("rope_base_len", 10000)
    unsupported = [
        ("vq_enable=false (no codes)", not top.get("vq_enable", True)),
        ("query_low_rank=false", not top.get("query_low_rank", True)),
        ("output_resolution != 0 (a final resize)", top.get("output_resolution", 0) != 0),
        ("num_denoising_steps != num_query_groups", top["num_denoising_steps"] != groups),
        ("queries_per_step != num_all_queries / num_query_groups", top.get("queries_per_step", tokens // groups) * groups != tokens),
        ("diff_decoder.in_dim != 3", dec.get("in_dim", 3) != 3),
        ("diff_decoder.cond_dim != decoder_dim", dec.get("cond_dim", top["decoder_dim"]) != top["decoder_dim"]),
        ("diff_decoder.mlp_head=true", dec.get("mlp_head", False)),
        ("diff_decoder.share_time_encoding=true", dec.get("share_time_encoding", False)),
        ("different rope_base_len in model and diff_decoder", dec.get("rope_base_len", rope) != rope),
    ]  # fmt: skip
    bad = [name for name, flag in unsupported if flag]
    if bad:
        raise ValueError(f"official tokenizer options not supported by our tokenizer: {bad}.")
    image_size = int(top.get("sampling_resolution", 256))
    repa_layer = dec.get("repa_layer", 8)
    return TokenizerConfig(
        image_size=image_size,
        num_tokens=tokens,
        num_steps=groups,
        codebook_size=top["vq_codebook_size"],
        codebook_dim=top["vq_dim"],
        head_dim=64,  # every official model uses 64-d heads (reference §2.1)
        mlp_ratio=4,
        rope_theta=float(rope),
        encoder_patch_size=top["encoder_patch_size"],
        encoder_dim=top["encoder_dim"],
        num_encoder_layers=top["num_encoder_layers"],
        query_rank=8,
        condition_dim=top["decoder_dim"],
        num_condition_layers=top["num_decoder_layers"],
        position_table_size=1024,
        decoder_patch_size=dec["patch_size"],
        decoder_dim=dec["dim"],
        num_decoder_layers=dec["depth"],
        data_scale=float(dec.get("data_std", 1.0)),
        time_shift=float(dec.get("time_shift", 1.0)),
        repa_layer=repa_layer if repa_layer < dec["depth"] else None,  # official: the head never runs then
        repa_hidden_dim=2048,
        repa_dim=768,
        repa_grid=min(16, image_size // dec["patch_size"]),
    )


def tokenizer_config_from_official_yaml(path: str | os.PathLike) -> Any:
    """Read an official tokenizer YAML (``configs/tokenizer_v1.yaml`` style) into a ``TokenizerConfig``.

    The file holds a ``model:`` block (or is that block); see :func:`tokenizer_config_from_official`.
    """
    import yaml

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    model = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or "diff_decoder" not in model:
        raise ValueError(
            f"{path} is not an official D-AR tokenizer config: expected a 'model:' block with 'diff_decoder:'."
        )
    return tokenizer_config_from_official(model)


def resolve_tokenizer_config(spec: Any) -> Any:
    """A ``TokenizerConfig`` from a preset name, a ``TokenizerConfig`` or the path of an official YAML."""
    from tokenizer import TOKENIZER_PRESETS, TokenizerConfig

    if isinstance(spec, TokenizerConfig):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if text in TOKENIZER_PRESETS:
            return TOKENIZER_PRESETS[text]
        if text.endswith((".yaml", ".yml")) or Path(text).is_file():
            return tokenizer_config_from_official_yaml(text)
    raise ValueError(
        f"tokenizer_config={spec!r} is neither a preset ({sorted(TOKENIZER_PRESETS)}), a TokenizerConfig nor an "
        "official YAML file."
    )


def convert_tokenizer_state_dict(
    official_sd: Mapping[str, torch.Tensor], config: Any
) -> dict[str, torch.Tensor]:
    """Map official tokenizer weights onto ``DARTokenizer`` names, checked against ``config`` (cheap, no model).

    The key mapping itself (``tokenizer.official_keys.official_to_ours``) belongs to the tokenizer package.
    """
    from tokenizer.official_keys import official_to_ours

    if "quantize.embedding.weight" not in official_sd:
        gpt_like = "tok_embeddings.weight" in official_sd
        raise ValueError(
            "not an official D-AR tokenizer state dict (no quantize.embedding.weight)"
            + ("; this looks like a GPT checkpoint: pass it as the AR checkpoint." if gpt_like else ".")
        )
    return official_to_ours(dict(official_sd), config)


def convert_tokenizer(official_sd: Mapping[str, torch.Tensor], config: Any) -> Any:
    """Build a ``DARTokenizer`` from ``config`` and load the official tokenizer weights into it, strictly."""
    from dar.official_weights import load_strict
    from tokenizer import DARTokenizer

    converted = convert_tokenizer_state_dict(official_sd, config)
    tokenizer = DARTokenizer.from_config(config)
    load_strict(tokenizer, converted, "tokenizer")
    return tokenizer.eval()


# ---------------------------------------------------------------------------------------------- assembly
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
    from dar.official_weights import (
        convert_ar_state_dict,
        infer_ar_preset,
        load_official_state_dict,
        load_strict,
        official_gpt_shapes,
    )
    from dar.pipeline import DARPipeline
    from llama_ar import ARConfig, VocabLayout, build_ar_model
    from tokenizer import DARTokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
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
