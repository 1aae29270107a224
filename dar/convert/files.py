"""Reading the official D-AR checkpoint files (reference §6): local ``.pt`` files or Hub references.

:func:`load_official_state_dict` reads an official file (bare or wrapped, ``ema`` preferred over ``model``;
``_orig_mod.`` / ``module.`` prefixes stripped once, here; KV-cache buffers dropped) with
``torch.load(weights_only=True)``. The key mappings belong to the model packages
(``tokenizer.official_keys``, ``llama_ar.official_keys``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

OFFICIAL_REPO_ID = "showlab/D-AR"
OFFICIAL_TOKENIZER_FILE = "D-AR-tokenizer_v1.pt"
_WRAPPER_KEYS = ("ema", "model", "module", "state_dict")  # in order of preference
_PREFIXES = ("_orig_mod.", "module.")
_KV_CACHE = re.compile(r"\.kv_cache\.[kv]_cache$")


# ------------------------------------------------------------------------------------------------ loading
class _OfficialConfigPlaceholder:
    """Inert stand-in for the official ``config_util.Config`` pickled inside training checkpoints."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _describe_file(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the torch.save format), possibly truncated or not written by torch"
    if head[:1] == b"\x80":
        return "a legacy pickle file, possibly truncated"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a binary file starting with {head[:8]!r}"
    return f"a text file starting with {text[:40]!r}"


def _resolve_path(path_or_hub_id: str | os.PathLike, default_filename: str | None) -> Path:
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{path} is a directory; pass the official .pt checkpoint file itself.")
        return path
    text = str(path_or_hub_id)
    match = re.fullmatch(r"([\w.-]+/[\w.-]+)(?:/(.+))?", text)
    if match is None or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such checkpoint file: {text}.")
    repo_id, filename = match.group(1), match.group(2) or default_filename
    if filename is None:
        raise FileNotFoundError(
            f"{text} is not a local file. As a hub id it names no file: pass '{repo_id}/<file>', e.g. "
            f"'{OFFICIAL_REPO_ID}/D-AR-L-360K.pt' or '{OFFICIAL_REPO_ID}/D-AR-XL-360K.pt'."
        )
    from huggingface_hub import constants, hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # offline mode, network failure, missing repo or file
        offline = constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
        hint = (
            "HF_HUB_OFFLINE is set and the file is not in the local cache: unset it or download the file first"
            if offline
            else "check the network, the repo id and the file name, or download the file and pass its path"
        )
        raise FileNotFoundError(
            f"{text} is not a local file and downloading {filename!r} from the hub repo {repo_id!r} failed "
            f"({type(error).__name__}: {error}); {hint}."
        ) from error


def _torch_load(path: Path) -> Any:
    safe = [argparse.Namespace, (_OfficialConfigPlaceholder, "config_util.Config")]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals(safe):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _has_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, where: str) -> tuple[Mapping[str, Any], str]:
    for _ in range(3):  # e.g. {"model": {"module": {...}}}
        if _has_tensors(obj):
            return obj, where
        if not isinstance(obj, Mapping):
            break
        for key in _WRAPPER_KEYS:
            if _has_tensors(obj.get(key)) or (isinstance(obj.get(key), Mapping) and obj.get(key)):
                obj, where = obj[key], f"{where}[{key!r}]"
                break
        else:
            break
    if _has_tensors(obj):
        return obj, where
    found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"{where} holds no tensors (found {found}); expected a state dict of tensors, bare or under one of "
        f"the keys {list(_WRAPPER_KEYS)}."
    )


def _clean_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def load_official_state_dict(
    path_or_hub_id: str | os.PathLike, *, default_filename: str | None = None
) -> dict[str, torch.Tensor]:
    """Read an official D-AR checkpoint into a flat state dict of tensors.

    Accepts the released bare files and the training files (``{"model", "ema", "optimizer", "args", "config",
    …}``; ``ema`` is preferred over ``model``, then ``module`` / ``state_dict``). Prefixes ``_orig_mod.``
    (torch.compile) and ``module.`` (DDP) are stripped; ``*.kv_cache.k_cache`` / ``v_cache`` buffers are dropped.
    Loading always uses ``weights_only=True``; the pickled ``argparse.Namespace`` and official ``Config`` of
    training files are read as inert placeholders.

    Args:
        path_or_hub_id: a local file (``.pt``/``.pth``/``.bin``, or ``.safetensors``), or, when no such path
            exists, a hub reference ``owner/repo/file`` (``owner/repo`` uses ``default_filename``).
        default_filename: file to take from a bare hub repo id.

    Returns:
        ``{name: tensor}`` with official parameter names (CPU; possibly memory-mapped).

    Raises:
        FileNotFoundError: no such file and no hub download possible (offline, network).
        ValueError: a truncated or foreign file, or one without tensors; the message says what the file is.
    """
    path = _resolve_path(path_or_hub_id, default_filename)
    try:
        obj = _torch_load(path)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, KeyError, EOFError… by case
        raise ValueError(
            f"{path} could not be read as a PyTorch checkpoint: it is {_describe_file(path)} "
            f"({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}). Expected an official D-AR .pt file "
            "(a state dict saved with torch.save)."
        ) from error
    state, where = _unwrap(obj, path.name)
    if isinstance(obj, Mapping) and where != path.name:
        logger.info("%s: using the weights under %s (top-level keys: %s)", path, where, sorted(map(str, obj)))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where} entry {key!r} is a {type(value).__name__}, not a tensor.")
        name = _clean_key(str(key))
        if _KV_CACHE.search(name):
            continue
        if name in out:
            raise ValueError(
                f"{where}: keys {key!r} and another both map to {name!r} after prefix stripping."
            )
        out[name] = value
    return out
