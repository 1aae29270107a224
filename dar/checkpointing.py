"""Training checkpoints: atomic ``accelerator.save_state`` with rotation and ``--resume latest`` (DESIGN §6, §10).

A checkpoint is ``<root>/checkpoint-<step:08d>/`` holding accelerate's state (model, optimizer, scheduler, RNG
states, registered hooks such as the EMA) plus ``trainer_state.json``. It is written to a hidden temporary
folder and renamed into place only once complete, so a run killed while saving leaves the previous
checkpoints loadable; ``list_checkpoints`` ignores anything without ``trainer_state.json``. Rotation (keep the
newest K) runs only after a successful rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
STATE_FILE = "trainer_state.json"

__all__ = [
    "STATE_FILE",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_trainer_state",
    "resolve_resume",
    "rotate_checkpoints",
    "save_checkpoint",
]


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint (``{"step": int, ...}``)."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} is not a complete checkpoint (no {STATE_FILE}); pick another or start over"
        )
    return json.loads(file.read_text())


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not (path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and (path / STATE_FILE).is_file()):
            continue
        try:
            step = int(read_trainer_state(path)["step"])
        except (ValueError, KeyError, json.JSONDecodeError):
            logger.warning("ignoring checkpoint %s: unreadable %s", path, STATE_FILE)
            continue
        found.append((step, path))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def resolve_resume(resume: str | None, root: str | os.PathLike) -> Path | None:
    """Turn ``train.resume`` into a checkpoint path.

    Args:
        resume: None (fresh run), ``"latest"`` (newest complete checkpoint in ``root``; a fresh run when there is
            none yet, so a restarted job can always pass it) or a checkpoint directory.
        root: the run's checkpoint folder.
    """
    if resume is None:
        return None
    if resume == "latest":
        path = latest_checkpoint(root)
        if path is None:
            logger.info("--resume latest: no checkpoint in %s yet, starting from scratch", root)
        return path
    path = Path(resume)
    read_trainer_state(path)  # raises with a clear message when incomplete or missing
    return path


def rotate_checkpoints(root: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; returns the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    found = list_checkpoints(root)
    doomed = [path for _, path in found[:-keep_last]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("deleted old checkpoint %s", path)
    return doomed


def save_checkpoint(
    accelerator: Any,
    root: str | os.PathLike,
    step: int,
    keep_last: int,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """``accelerator.save_state`` into ``<root>/checkpoint-<step>`` atomically, then keep the newest ``keep_last``.

    All processes must call it (accelerate saves per-process RNG states). The state is written to
    ``<root>/.tmp-checkpoint-<step>``; the main process then writes ``trainer_state.json`` and renames the folder.
    If anything raises before the rename, earlier checkpoints are untouched.

    Args:
        accelerator: the run's ``accelerate.Accelerator``.
        root: checkpoint folder of the run.
        step: optimizer steps completed.
        keep_last: number of complete checkpoints to keep.
        extra_state: JSON-serialisable values stored next to ``step`` in ``trainer_state.json``.

    Returns:
        The final checkpoint path.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):  # leftovers of an interrupted save
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": int(step), **(extra_state or {})}
        with (tmp / STATE_FILE).open("w") as fh:
            json.dump(state, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            old = root / f"{TMP_PREFIX}old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        rotate_checkpoints(root, keep_last)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``accelerator.load_state(path)`` and return its ``trainer_state.json``."""
    state = read_trainer_state(path)
    accelerator.load_state(str(path))
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state
