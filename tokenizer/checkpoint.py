"""Strict loading of saved tokenizers: one folder, safetensors only, every key accounted for.

``DARTokenizer.from_pretrained`` reads ``config.json`` and ``diffusion_pytorch_model.safetensors`` (diffusers'
layout, also sharded with an ``.index.json``) itself instead of going through diffusers' non-strict loader: a
damaged file is named, and a weight that is missing, unexpected or of another shape is an error that lists the
keys — never a random initialisation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")

__all__ = [
    "check_safetensors_file",
    "drop_diffusers_loader_options",
    "key_report",
    "load_weights",
    "resolve_folder",
]

# Loader options that diffusers' DiffusionPipeline.from_pretrained hands every component (accepted, unused).
DIFFUSERS_LOADER_DEFAULTS = {
    "device_map": None,
    "disable_mmap": False,
    "low_cpu_mem_usage": True,
    "max_memory": None,
    "offload_folder": None,
    "offload_state_dict": None,
    "use_flashpack": False,
    "use_safetensors": None,
    "variant": None,
}


def drop_diffusers_loader_options(kwargs: dict[str, Any], what: str) -> None:
    """Remove diffusers' generic loader options from ``kwargs`` (in place), refusing the ones we cannot honour."""
    for name, default in DIFFUSERS_LOADER_DEFAULTS.items():
        value = kwargs.pop(name, default)
        if name in ("variant", "device_map") and value is not None:
            raise ValueError(f"{what}.from_pretrained does not support {name}={value!r}")
        if name == "use_safetensors" and value is False:
            raise ValueError(f"{what} folders hold safetensors only: do not pass use_safetensors=False")


def key_report(
    expected: Mapping[str, Iterable[int]], found: Mapping[str, Iterable[int]], limit: int = 20
) -> str | None:
    """Describe how two ``{key: shape}`` tables differ, or None when they match exactly.

    Args:
        expected: what the model needs (e.g. ``{k: v.shape for k, v in model.state_dict().items()}``).
        found: what the file holds.
        limit: keys listed per category (the count is always given).
    """
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
    """Open a safetensors file (which validates its header against its size) and list its tensors.

    Returns:
        ``{key: shape}`` of the tensors in the file.

    Raises:
        ValueError: naming the file, when it is truncated, empty or not a safetensors file.
    """
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


def resolve_folder(
    path_or_id: str | os.PathLike, what: str, subfolder: str | None = None, **hub: Any
) -> Path:
    """A local folder for ``path_or_id``: the folder itself, or a Hub snapshot for an ``owner/name`` id.

    A path that does not exist is an error, never a Hub lookup, unless it reads as a Hub id ``owner/name`` whose
    ``owner`` is not a local folder (``checkpoints/dar-animal`` beside ``checkpoints/`` is a local typo).

    Args:
        path_or_id: a local folder or a Hub repository id.
        what: what is being loaded, for messages ("tokenizer").
        subfolder: a folder inside it (e.g. ``tokenizer`` of a pipeline folder).
        **hub: ``revision``, ``cache_dir``, ``local_files_only``, ``token`` for the Hub download.
    """
    unknown = sorted(set(hub) - set(HUB_KWARGS))
    if unknown:
        raise TypeError(
            f"unexpected keyword arguments {unknown}; supported: subfolder, torch_dtype, {HUB_KWARGS}"
        )
    text = os.path.expanduser(os.fspath(path_or_id))
    folder = Path(text)
    if not folder.exists():
        parts = text.split("/")
        local = len(parts) != 2 or not all(parts) or Path(parts[0]).is_dir()
        if folder.is_absolute() or text.startswith(".") or local:
            raise FileNotFoundError(f"no {what} folder at {text}: pass a folder written by save_pretrained")
        folder = _hub_snapshot(text, what, subfolder, **hub)
    if subfolder:
        folder = folder / subfolder
    if not folder.is_dir():
        raise FileNotFoundError(f"no {what} folder at {folder}: pass a folder written by save_pretrained")
    return folder


def _hub_snapshot(repo_id: str, what: str, subfolder: str | None, **hub: Any) -> Path:
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/*"] if subfolder else None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, **hub))
    except Exception as error:  # offline, unknown repo, network: one message naming the fix
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the local cache: download it first "
            f"(huggingface-cli download {repo_id}) or pass a local folder"
            if offline
            else "check the repository id and the network, or pass a local folder"
        )
        raise FileNotFoundError(
            f"{repo_id} is not a local folder and the {what} could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}); {hint}"
        ) from None


def load_weights(model: torch.nn.Module, folder: Path, what: str) -> None:
    """Load ``folder``'s safetensors weights into ``model`` strictly (missing/unexpected/misshaped keys raise)."""
    from safetensors.torch import load_file

    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        files = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = [folder / WEIGHTS_NAME]
    if not all(f.is_file() for f in files):
        found = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(
            f"{folder} has no {WEIGHTS_NAME} (found {found}); safetensors weights are required"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(check_safetensors_file(file))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = key_report(expected, shapes)
    if problems:
        raise ValueError(
            f"the weights in {folder} do not fit the {what} its config.json describes ({problems}); the folder "
            "was written by another configuration or version: re-export it, or fix config.json"
        )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    model.load_state_dict(state, strict=True)
