"""Checks on a DART pipeline folder before diffusers loads it: the right pipeline class, intact safetensors, and a
clear answer for a path that is neither a local folder nor a Hub id."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["check_pipeline_folder"]


def check_pipeline_folder(path, class_name: str) -> Path | str:
    """Validate a ``from_pretrained`` argument.

    Returns:
        the local folder (checked: its ``model_index.json`` names ``class_name``, every ``*/*.safetensors`` opens),
        or the text of a Hub id ``owner/name`` whose ``owner`` is no local folder.

    Raises:
        FileNotFoundError: a missing path that cannot be a Hub id.
        ValueError: a folder holding another pipeline class, invalid JSON or a damaged weights file.
    """
    text = os.path.expanduser(os.fspath(path))
    folder, parts = Path(text), text.split("/")
    if not folder.exists():
        if folder.is_absolute() or text.startswith(".") or len(parts) != 2 or Path(parts[0]).is_dir():
            raise FileNotFoundError(f"no DART pipeline folder at {text}: pass a save_pretrained folder")
        return text
    index = folder / "model_index.json"
    try:
        found = json.loads(index.read_text()).get("_class_name") if index.is_file() else class_name
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ValueError(f"{index} is not valid JSON: re-export it with save_pretrained") from None
    if found != class_name:
        raise ValueError(
            f"{folder} holds a {found}, not a {class_name}: load it with dar.loading.load_pipeline"
        )
    for file in sorted(folder.glob("*/*.safetensors")):
        _check_safetensors(file)
    return folder


def _check_safetensors(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt"):
            pass
    except Exception as error:  # SafetensorError, OSError: a damaged or foreign file
        raise ValueError(
            f"{file} is damaged or not a safetensors file ({file.stat().st_size} bytes; {error}): re-download it, "
            "or re-export it with save_pretrained"
        ) from None
