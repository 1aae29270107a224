"""Strict loading of a saved AR prior: the folder's weights must be exactly what its ``config.json`` describes.

``transformers``' ``from_pretrained`` fills in random weights for missing keys (a config with more layers than
the file, a file without ``lm_head.weight``) and only prints a table. :func:`load_ar_model` compares the file's
tensors with the model the config builds *before* loading, names a damaged file, and raises with the list of
missing, unexpected and misshaped keys. The loaded model is still a stock ``LlamaForCausalLM``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .layout import VocabLayout

__all__ = ["check_ar_folder", "check_safetensors_file", "key_report", "load_ar_model"]

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def key_report(
    expected: Mapping[str, Iterable[int]], found: Mapping[str, Iterable[int]], limit: int = 20
) -> str | None:
    """Describe how two ``{key: shape}`` tables differ (missing, unexpected, misshaped), or None when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k}: model {tuple(expected[k])} vs file {tuple(found[k])}"
        for k in sorted(set(expected) & set(found))
        if tuple(expected[k]) != tuple(found[k])
    ]
    parts = [
        f"{name} ({len(keys)}): {keys[:limit]}{' …' if len(keys) > limit else ''}"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped))
        if keys
    ]
    return "; ".join(parts) or None


def check_safetensors_file(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a safetensors file; ``ValueError`` naming the file when it is truncated or foreign."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # SafetensorError, OSError: a damaged or foreign file
        size = Path(path).stat().st_size if Path(path).exists() else 0
        raise ValueError(
            f"{path} is damaged or not a safetensors file ({size} bytes; {error}): re-download it, or re-export "
            "it with save_pretrained"
        ) from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        return sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    found = sorted(p.name for p in folder.iterdir())
    raise FileNotFoundError(
        f"{folder} has no {WEIGHTS_NAME} (found {found}); safetensors weights are required"
    )


def check_ar_folder(path: str | os.PathLike):
    """Check, without loading a weight, that a saved AR prior's weights are exactly what its config describes.

    Args:
        path: a ``save_pretrained`` folder: ``config.json`` (carrying ``dar_layout``) and ``model.safetensors``
            (or a sharded index).

    Returns:
        The folder's ``LlamaConfig``.

    Raises:
        FileNotFoundError: no such folder, no config or no safetensors weights.
        ValueError: a damaged file, a config without ``dar_layout``, or missing, unexpected or misshaped weights
            (listed, in one line).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no AR model folder at {folder} (config.json missing): pass a save_pretrained folder"
        )
    found: dict[str, tuple[int, ...]] = {}
    for file in _weight_files(folder):
        found.update(check_safetensors_file(file))
    config = LlamaConfig.from_pretrained(folder)
    VocabLayout.from_config(config)  # raises when the folder is not a D-AR prior
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings and "lm_head.weight" not in found:
        expected.pop("lm_head.weight", None)  # a tied head is the embedding; save_pretrained omits it
    problems = key_report(expected, found)
    if problems:
        raise ValueError(
            f"the weights in {folder} do not fit the Llama its config.json describes ({problems}): the folder was "
            "written by another configuration; re-export it, or fix config.json"
        )
    return config


def load_ar_model(
    path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, **from_pretrained_kwargs: Any
):
    """Load a ``save_pretrained`` folder of the AR prior strictly, as a stock ``LlamaForCausalLM``.

    Args:
        path: a local folder with ``config.json`` (carrying ``dar_layout``) and ``model.safetensors``.
        torch_dtype: dtype to load in (default: the saved dtype, float32 for our models).
        **from_pretrained_kwargs: passed on to ``LlamaForCausalLM.from_pretrained`` (e.g. ``attn_implementation``).

    Returns:
        The model in eval mode.

    Raises:
        FileNotFoundError: no such folder, no config or no safetensors weights.
        ValueError: a damaged file, a config without ``dar_layout``, or weights that do not fit the config.
    """
    from transformers import LlamaForCausalLM

    folder = Path(path).expanduser()
    check_ar_folder(folder)
    kwargs = dict(from_pretrained_kwargs)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    return LlamaForCausalLM.from_pretrained(folder, **kwargs).eval()
