"""Setting up a training run: the accelerator, the output folder and the resume point (DESIGN §6, §10).

``start_run`` is the first call of every recipe: it builds the accelerator (precision, trackers, seedable data
order), refuses a used ``output_dir`` unless the run resumes (``--resume``) or overwrites (``--overwrite``),
writes ``config.yaml``, and finds the checkpoint to resume from.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dar.training.checkpoints import resolve_resume
from dar.training.config import TrainConfig
from dar.training.config_io import save_config, to_dict

logger = logging.getLogger(__name__)

__all__ = [
    "Run",
    "build_accelerator",
    "check_distributed_setup",
    "check_world_size",
    "flat_config",
    "micro_batch_size",
    "multi_process_cpu_launch",
    "prepare_output_dir",
    "resolve_mixed_precision",
    "start_run",
]

RUN_ARTEFACTS = ("checkpoints", "export", "logs", "samples", "config.yaml")
# Config sections that must not change when a run is resumed (train.* and sample.* may).
FIXED_ON_RESUME = ("data", "model", "loss", "optim", "ema")


@dataclass
class Run:
    """What :func:`start_run` sets up: the accelerator, the run folder and the checkpoint to resume from."""

    accelerator: Any
    output_dir: Path
    resume_from: Path | None
    name: str = "run"


def start_run(cfg: Any, name: str, kwargs_handlers: list | None = None) -> Run:
    """Accelerator, checked output folder, ``config.yaml`` and resume point of a recipe's config ``cfg``.

    Args:
        cfg: the recipe's top-level config (with a ``train: TrainConfig`` section).
        name: the recipe's name (for logs).
        kwargs_handlers: passed to ``Accelerator``.
    """
    train: TrainConfig = cfg.train
    out = Path(train.output_dir)
    accelerator = build_accelerator(train, kwargs_handlers)
    if accelerator.is_main_process:
        prepare_output_dir(out, train, to_dict(cfg))
    accelerator.wait_for_everyone()
    resume_from = resolve_resume(train.resume, out / "checkpoints")
    if accelerator.is_main_process and resume_from is None:
        save_config(cfg, out / "config.yaml")
    logger.info(
        "%s: world size %d, device %s, mixed precision %s",
        name,
        accelerator.num_processes,
        accelerator.device,
        accelerator.mixed_precision,
    )
    return Run(accelerator=accelerator, output_dir=out, resume_from=resume_from, name=name)


def prepare_output_dir(out: Path, train: TrainConfig, config: dict[str, Any]) -> None:
    """Refuse to let a fresh run take over a used folder; with ``overwrite`` clear the previous run first.

    A folder is *used* when it holds any of the recipe artefacts (``checkpoints/``, ``export/``, ``logs/``,
    ``samples/``, ``config.yaml``). Resuming is allowed only with the same data, model, loss, optimizer and EMA
    settings as the run that wrote the folder (``train.*`` such as ``max_steps`` may change).
    """
    used = [name for name in RUN_ARTEFACTS if (out / name).exists()]
    if train.resume is not None:
        previous = out / "config.yaml"
        if previous.is_file():
            old = yaml.safe_load(previous.read_text()) or {}
            changed = [k for k in FIXED_ON_RESUME if k in config and old.get(k) != config[k]]
            if changed:
                raise ValueError(
                    f"{out} was written by a run with other {changed} settings (see {previous}): resume it with the "
                    "same config, or start a new run in another output_dir (or pass --overwrite)"
                )
        return
    if not used:
        return
    if not train.overwrite:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(used)}): pass --resume latest to continue it, --overwrite to "
            "delete it and start over, or choose another train.output_dir"
        )
    for name in used:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    logger.warning("--overwrite: deleted %s of the previous run in %s", ", ".join(used), out)


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


def micro_batch_size(global_batch: int, num_processes: int, grad_accum: int) -> int:
    """Per-process micro-batch of a global batch; raises when it does not divide evenly."""
    parts = num_processes * grad_accum
    if global_batch % parts:
        raise ValueError(
            f"data.batch_size={global_batch} (global) is not divisible by {num_processes} processes × "
            f"{grad_accum} accumulation steps; choose a multiple of {parts}"
        )
    return global_batch // parts


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
