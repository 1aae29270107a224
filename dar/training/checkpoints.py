"""Training checkpoints: atomic ``accelerator.save_state`` with rotation and ``--resume latest`` (DESIGN §6, §10).

A checkpoint is ``<root>/checkpoint-<step:08d>/`` holding accelerate's state (model, optimizer, RNG states, the
EMA through a save hook) plus ``trainer_state.json`` (step, counters and the LR scheduler's state as JSON —
nothing of ours is pickled, and accelerate's only unsafe loader, the one for registered objects, is never
used). It is written to a hidden temporary folder, every file is fsynced, and only then renamed into place, so a
run killed while saving leaves the previous checkpoints loadable. ``resume="latest"`` checks the newest
checkpoint's files and falls back to the previous complete one, saying so, when it is damaged. Rotation (keep
the newest K) runs only after a successful rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from llama_ar.checkpoint import check_safetensors_file

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
STATE_FILE = "trainer_state.json"

__all__ = [
    "STATE_FILE",
    "DamagedCheckpointError",
    "check_checkpoint",
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


class DamagedCheckpointError(ValueError):
    """A checkpoint folder is incomplete or one of its files is damaged (the message names it)."""


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint (``{"step": int, ...}``), checked.

    Raises:
        FileNotFoundError: no ``trainer_state.json``.
        DamagedCheckpointError: unreadable JSON, not an object, or no integer ``step``.
    """
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} is not a complete checkpoint (no {STATE_FILE}); pick another or start over"
        )
    try:
        state = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedCheckpointError(f"{file} is not valid JSON ({error})") from None
    if (
        not isinstance(state, dict)
        or isinstance(state.get("step"), bool)
        or not isinstance(state.get("step"), int)
    ):
        raise DamagedCheckpointError(
            f"{file} must be a JSON object with an integer 'step', got {str(state)[:80]}"
        )
    return state


def check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check that a checkpoint folder is complete and readable; returns its trainer state.

    Checks ``trainer_state.json``, every safetensors file (header against size), and that accelerate's
    ``*.bin`` / ``*.pkl`` files are intact zip archives (torch's format), without loading them.

    Raises:
        FileNotFoundError / DamagedCheckpointError: naming the missing or damaged file.
    """
    path = Path(path)
    state = read_trainer_state(path)
    required = ["optimizer.bin", "random_states_0.pkl"]
    if not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        required.append("model.safetensors")
    for name in required:
        if not (path / name).is_file():
            raise DamagedCheckpointError(f"{path / name} is missing: the checkpoint {path} is incomplete")
    for file in sorted(path.glob("*.safetensors")):
        try:
            check_safetensors_file(file)
        except ValueError as error:
            raise DamagedCheckpointError(str(error)) from None
    for file in sorted(path.glob("*.bin")) + sorted(path.glob("*.pkl")):
        if not zipfile.is_zipfile(file):
            raise DamagedCheckpointError(f"{file} is truncated or damaged (not a complete torch archive)")
    return state


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first (an unreadable state is skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not (path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and (path / STATE_FILE).is_file()):
            continue
        try:
            step = read_trainer_state(path)["step"]
        except DamagedCheckpointError as error:
            logger.warning("ignoring checkpoint %s: %s", path, error)
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
        root = Path(root)
        candidates = sorted(root.glob(f"{CHECKPOINT_PREFIX}*")) if root.is_dir() else []  # by name = by step
        candidates = [path for path in candidates if path.is_dir()]
        for path in reversed(candidates):
            try:
                check_checkpoint(path)
            except (FileNotFoundError, DamagedCheckpointError) as error:
                logger.warning("--resume latest: skipping the damaged checkpoint %s (%s)", path, error)
                continue
            if path != candidates[-1]:
                logger.warning("--resume latest: resuming from the previous complete checkpoint %s", path)
            return path
        if candidates:
            raise DamagedCheckpointError(
                f"every checkpoint in {root} is damaged (see the warnings above): start over with --overwrite"
            )
        logger.info("--resume latest: no checkpoint in %s yet, starting from scratch", root)
        return None
    path = Path(resume)
    check_checkpoint(path)  # an explicitly named checkpoint must be intact: no silent fallback
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
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        _fsync_tree(tmp)  # every file on disk before the rename makes the checkpoint count
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            old = root / f"{TMP_PREFIX}old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        rotate_checkpoints(root, keep_last)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


def load_checkpoint(accelerator: Any, path: str | os.PathLike, scheduler: Any = None) -> dict[str, Any]:
    """``accelerator.load_state(path)``, the LR scheduler's state from ``trainer_state.json``, and that state.

    A folder holding accelerate's ``custom_checkpoint_*.pkl`` is refused before anything is read: accelerate
    would unpickle it with ``weights_only=False``, so a crafted file could run code. Our checkpoints never write
    one (registered objects are not used). Without a stored scheduler state (a checkpoint of an earlier
    version) the schedule is recomputed from the step, as the LR is a pure function of the step.
    """
    state = check_checkpoint(path)
    pickles = sorted(Path(path).glob("custom_checkpoint_*.pkl"))
    if pickles:
        raise DamagedCheckpointError(
            f"{pickles[0]} is a pickle that accelerate would load with weights_only=False (it can run code); "
            "checkpoints of this project never contain one. Delete it if you trust the folder, then resume"
        )
    accelerator.load_state(str(path))
    if scheduler is not None:
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        else:
            scheduler.last_epoch = state["step"] - 1
            scheduler.step()
            logger.info(
                "%s holds no scheduler state: the LR schedule is recomputed from step %d", path, state["step"]
            )
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state
