"""Pieces of a recipe's training loop on ``accelerate`` (DESIGN §6, §10).

``build_accelerator`` (precision, trackers, seedable data order), ``micro_batch_size`` (global batch →
per-process micro-batch), ``iterate_batches`` (endless, resumable batch stream), ``step_generator`` (per-step
noise that does not depend on where a run was resumed), ``gather_metrics`` (mean over processes plus the NaN
guard on every process at once) and ``JsonlLogger`` (a plain log the tests and users can read back).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dar.training import TrainConfig, check_finite_loss

logger = logging.getLogger(__name__)

__all__ = [
    "JsonlLogger",
    "build_accelerator",
    "check_distributed_setup",
    "clip_gradients",
    "check_world_size",
    "flat_config",
    "gather_metrics",
    "iterate_batches",
    "micro_batch_size",
    "multi_process_cpu_launch",
    "read_jsonl",
    "resolve_mixed_precision",
    "step_generator",
]


def build_accelerator(train: TrainConfig, kwargs_handlers: list | None = None) -> Any:
    """An ``accelerate.Accelerator`` for a recipe.

    Mixed precision from ``train.mixed_precision`` (``auto``: bf16 on CUDA, fp32 on CPU), tensorboard under
    ``<output_dir>/logs`` when ``train.log_with="tensorboard"`` and tensorboard is installed, and a seedable
    sampler seeded with ``train.seed`` so that data order is exact at any process count and after a resume.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, is_tensorboard_available

    log_with = None
    if train.log_with == "tensorboard":
        if is_tensorboard_available():
            log_with = "tensorboard"
        else:
            logger.warning(
                "tensorboard is not installed: logging to logs/train_log.jsonl only (pip install tensorboard)"
            )
    accelerator = Accelerator(
        cpu=multi_process_cpu_launch(),
        mixed_precision=resolve_mixed_precision(train.mixed_precision),
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=train.output_dir, logging_dir=os.path.join(train.output_dir, "logs")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train.seed),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=kwargs_handlers,
    )
    check_world_size(accelerator)
    return accelerator


def multi_process_cpu_launch() -> bool:
    """True under ``accelerate launch --multi_gpu`` / ``torchrun`` with several processes and no CUDA device.

    Pass it as ``Accelerator(cpu=...)``: without it every process silently runs its own single-process job
    (accelerate 1.15 forms a gloo group on CPU only with ``cpu=True`` or ``ACCELERATE_USE_CPU=true``).
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def check_world_size(accelerator: Any) -> None:
    """Raise when the launcher started more processes than accelerate put into the process group."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(
            f"WORLD_SIZE={launched} processes were launched but accelerate formed a group of "
            f"{accelerator.num_processes}; on CPU launch with `accelerate launch --multi_gpu` or torchrun"
        )


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict → ``{"optim/lr": 2e-4, ...}`` with tensorboard-friendly values (lists/None as str)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flat_config(value, name))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def resolve_mixed_precision(value: str) -> str:
    """``auto`` → ``bf16`` on a CUDA device with bf16 support, else ``no`` (CPU paths run fp32)."""
    if value != "auto":
        return value
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def step_generator(seed: int, step: int, process_index: int = 0, device: Any = "cpu") -> torch.Generator:
    """The generator of one training step on one process, a pure function of (seed, step, process)."""
    mixed = ((seed * 1_000_003 + process_index) * 2_147_483_647 + step) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(mixed)


def micro_batch_size(global_batch: int, num_processes: int, grad_accum: int) -> int:
    """Per-process micro-batch of a global batch; raises when it does not divide evenly."""
    parts = num_processes * grad_accum
    if global_batch % parts:
        raise ValueError(
            f"data.batch_size={global_batch} (global) is not divisible by {num_processes} processes × "
            f"{grad_accum} accumulation steps; choose a multiple of {parts}"
        )
    return global_batch // parts


def iterate_batches(loader: Any, start_batch: int = 0, accelerator: Any = None) -> Iterator[tuple[int, Any]]:
    """Endless ``(epoch, batch)`` stream over a (prepared) DataLoader, resumable at a micro-batch count.

    Each epoch calls ``loader.set_epoch(epoch)`` (re-seeds the shuffle and the dataset's augmentations);
    the first epoch skips ``start_batch % len(loader)`` batches through ``accelerator.skip_first_batches``.
    """
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(
            "the data loader is empty: the dataset is smaller than one batch (lower data.batch_size)"
        )
    epoch, skip = divmod(start_batch, per_epoch)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        source = loader
        if skip:
            if accelerator is None:
                raise ValueError("resuming inside an epoch needs the accelerator (skip_first_batches)")
            source = accelerator.skip_first_batches(loader, skip)
        for batch in source:
            yield epoch, batch
        skip = 0
        epoch += 1


class JsonlLogger:
    """Append one JSON object per line to ``path`` (main process only; others pass ``enabled=False``)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``JsonlLogger`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def gather_metrics(
    accelerator: Any, values: dict[str, torch.Tensor | float], step: int, last_checkpoint: Any = None
) -> dict[str, float]:
    """Average scalar metrics over processes and stop the run on a non-finite ``loss`` on any process.

    One ``gather`` per call; every process receives the same values, so all of them raise together (no rank is
    left waiting in a collective).

    Args:
        accelerator: the run's accelerator.
        values: scalar tensors or floats; the key ``loss`` is checked with ``check_finite_loss``; keys starting
            with ``sum_`` are summed over processes instead of averaged.
        step: the step being reported (1-based), named in the error.
        last_checkpoint: named in the error as the checkpoint to resume from.

    Returns:
        ``{name: float}`` (the ``sum_`` prefix removed).
    """
    names = list(values)
    local = torch.stack(
        [
            torch.as_tensor(values[k], dtype=torch.float32).detach().reshape(()).to(accelerator.device)
            for k in names
        ]
    )
    gathered = accelerator.gather(local[None]).reshape(-1, len(names))  # (processes, metrics)
    if "loss" in names:
        check_finite_loss(gathered[:, names.index("loss")], step, last_checkpoint)
    out = {}
    for i, name in enumerate(names):
        column = gathered[:, i]
        out[name.removeprefix("sum_")] = float(column.sum() if name.startswith("sum_") else column.mean())
    return out


def check_distributed_setup(accelerator: Any, ema_enabled: bool, grad_accum: int) -> None:
    """Refuse combinations the recipes do not support, naming the fix.

    FSDP shards the parameters the EMA copy would average; DeepSpeed owns accumulation (the recipes accumulate
    by hand with ``no_sync``).
    """
    kind = str(getattr(accelerator, "distributed_type", ""))
    if "FSDP" in kind and ema_enabled:
        raise ValueError(
            "EMA is not supported under FSDP: set ema.enabled=false (the paper's AR has none) or use DDP"
        )
    if "DEEPSPEED" in kind and grad_accum != 1:
        raise ValueError(
            "under DeepSpeed set optim.grad_accum=1 and gradient_accumulation_steps in the DeepSpeed config instead"
        )


def clip_gradients(accelerator: Any, model: torch.nn.Module, max_norm: float | None) -> float | None:
    """Clip the global gradient norm (None: no clipping); returns the norm before clipping when known."""
    if max_norm is None:
        return None
    norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)  # None under DeepSpeed (it clips itself)
    return None if norm is None else float(norm)
