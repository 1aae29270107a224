"""Opening pipeline folders of either system, by the class their ``model_index.json`` names.

:func:`load_pipeline` gives a :class:`dar.DARPipeline` or a :class:`dart.DARTPipeline`; the ``dar`` command
and the evaluation recipe serve both through it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenizer.checkpoint import resolve_folder

__all__ = ["check_model_index", "class_names", "image_size", "load_pipeline"]


def _pipeline_class(folder: Path) -> str | None:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"{folder} has no model_index.json: pass a folder written by save_pretrained")
    try:
        index = json.loads(index_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{index_file} is not valid JSON ({error}): re-export the folder with save_pretrained"
        ) from None
    if not isinstance(index, dict):
        raise ValueError(f"{index_file} must hold a JSON object: re-export the folder with save_pretrained")
    return index.get("_class_name")


def check_model_index(folder: Path, class_name: str) -> None:
    """Refuse a folder whose ``model_index.json`` names another pipeline class than ``class_name``."""
    found = _pipeline_class(folder)
    if found != class_name:
        raise ValueError(
            f"{folder} holds a {found}, not a {class_name}: load it with dar.loading.load_pipeline"
        )


def load_pipeline(path: str | os.PathLike, **kwargs: Any):
    """Open a pipeline folder of either system: a ``DARPipeline`` or a ``dart.DARTPipeline`` (by ``model_index.json``)."""
    hub = {k: v for k, v in kwargs.items() if k not in ("torch_dtype", "engine")}
    folder = resolve_folder(path, "pipeline", **hub)
    found = _pipeline_class(folder)
    if found == "DARPipeline":
        from dar.pipeline import DARPipeline

        return DARPipeline.from_pretrained(
            folder, torch_dtype=kwargs.get("torch_dtype"), engine=kwargs.get("engine")
        )
    if kwargs.get("engine") not in (None, "transformers"):
        raise ValueError(f"{folder} holds a {found}: only D-AR pipelines sample with an LLM engine")
    if found == "DARTPipeline":
        from dart import DARTPipeline

        return DARTPipeline.from_pretrained(folder, torch_dtype=kwargs.get("torch_dtype"))
    raise ValueError(
        f"{folder} holds a {found!r} pipeline; this project opens DARPipeline and DARTPipeline folders"
    )


def image_size(pipe: Any) -> int:
    """The resolution of a pipeline's images (D-AR: its tokenizer's; DART: its model's)."""
    component = getattr(pipe, "tokenizer", None) or pipe.transformer
    return component.config.image_size


def class_names(pipe: Any) -> list[str]:
    """The pipeline's class names in id order (the id itself where a class has no name)."""
    return [pipe.id2label.get(i, str(i)) for i in range(pipe.num_classes)]
