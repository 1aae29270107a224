"""The one training loop of every recipe (DESIGN §6, §10): accumulation, ``no_sync``, the non-finite guard,
gathered metrics, clipping, the optimizer and scheduler steps, EMA, logging, sample grids and checkpoints.

A recipe builds its model inside a *loss module* (``forward(*inputs, generator) -> {"loss": …, …}``, e.g.
:class:`tokenizer.TokenizerLossModule`, :class:`llama_ar.ARLossModule`), prepares it with accelerate and hands
it to :func:`train` with a function that turns a data batch into the module's inputs. Every process runs the
same steps; every check is gathered, so all processes stop together.

The guard never lets a non-finite value reach the weights or a checkpoint: the loss is checked before the
update, the gradient norm (computed for clipping anyway) before ``optimizer.step``, and the parameters before
every save, so the checkpoint named as the last good one really is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dar.data import mix_seed
from dar.training.checkpoints import load_checkpoint, save_checkpoint
from dar.training.config import OptimConfig, TrainConfig
from dar.training.ema import ema_model_for_export, register_ema_checkpointing
from dar.training.kernels import training_kernels
from dar.training.run import flat_config

logger = logging.getLogger(__name__)

__all__ = [
    "JsonlLogger",
    "NonFiniteError",
    "TrainResult",
    "TrainingLoop",
    "export_model",
    "gather_metrics",
    "iterate_batches",
    "read_jsonl",
    "step_generator",
    "train",
]

Inputs = Callable[[dict[str, Any]], tuple | None]


class NonFiniteError(RuntimeError):
    """A loss, a gradient or a weight became NaN or infinite; the run stopped before it could spread."""


def _stop(what: str, step: int, last_checkpoint: Any) -> NonFiniteError:
    where = (
        f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
    )
    return NonFiniteError(
        f"non-finite {what} at step {step}; the run stopped before updating or saving the weights, and {where}. "
        "Lower optim.lr, raise optim.warmup_steps or check the data, then --resume latest."
    )


def step_generator(seed: int, step: int, process_index: int = 0, device: Any = "cpu") -> torch.Generator:
    """The generator of one training micro-step on one process, a pure function of (seed, step, process)."""
    return torch.Generator(device=device).manual_seed(mix_seed(seed, process_index, step))


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
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``JsonlLogger`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def gather_metrics(
    accelerator: Any, values: dict[str, torch.Tensor | float], step: int, last_checkpoint: Any = None
) -> dict[str, float]:
    """Average scalar metrics over processes; stop the run on a non-finite ``loss`` on any process.

    One ``gather`` per call; every process receives the same values, so all of them raise together (no rank is
    left waiting in a collective). Keys starting with ``sum_`` are summed over processes instead of averaged.

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
    if "loss" in names and not bool(torch.isfinite(gathered[:, names.index("loss")]).all()):
        raise _stop(f"loss {gathered[:, names.index('loss')].tolist()}", step, last_checkpoint)
    out = {}
    for i, name in enumerate(names):
        column = gathered[:, i]
        out[name.removeprefix("sum_")] = float(column.sum() if name.startswith("sum_") else column.mean())
    return out


def _all_finite(accelerator: Any, tensors: list[torch.Tensor]) -> bool:
    """Whether every tensor on every process is finite (one reduction, one gather)."""
    local = torch.ones((), device=accelerator.device)
    if tensors:
        peaks = torch.stack([t.detach().abs().amax().float() for t in tensors if t.numel()])
        local = torch.isfinite(peaks).all().float().to(accelerator.device)
    return bool(accelerator.gather(local[None]).min() > 0)


@dataclass
class TrainingLoop:
    """Everything :func:`train` needs; the recipe builds it.

    Attributes:
        accelerator: the run's accelerator.
        module: the prepared loss module: ``module(*inputs(batch), generator) -> {"loss": …, name: scalar}``.
        optimizer: the prepared optimizer.
        scheduler: the LR scheduler (stepped once per optimizer step; its state goes to ``trainer_state.json``).
        loader: the prepared DataLoader.
        train: loop length, cadences, seed and output folder.
        optim: accumulation and clipping.
        inputs: ``batch -> tuple`` of forward arguments, or None when the batch holds nothing usable (every image
            unreadable); the loop then draws the next batch.
        ema: the EMA of ``ema_source`` (built before ``prepare``), or None.
        ema_source: the unwrapped model the EMA follows.
        sample: ``(step, path)`` writes a sample grid (called on the main process only), or None.
    """

    accelerator: Any
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: Any
    train: TrainConfig
    optim: OptimConfig
    inputs: Inputs
    ema: Any = None
    ema_source: torch.nn.Module | None = None
    sample: Callable[[int, Path], None] | None = None


@dataclass
class TrainResult:
    """What :func:`train` ends with: the last step, its metrics, skipped images and the last checkpoint."""

    step: int
    metrics: dict[str, float]
    skipped_images: int
    last_checkpoint: Path | None


def _next_inputs(batches: Iterator, inputs: Inputs) -> tuple[int, tuple, int]:
    """The next usable batch as (epoch, forward arguments, images skipped on the way)."""
    skipped = 0
    while True:
        epoch, batch = next(batches)
        skipped += int(batch.get("num_skipped", 0)) if isinstance(batch, dict) else 0
        args = inputs(batch)
        if args is not None:
            return epoch, args, skipped


def train(
    loop: TrainingLoop,
    resume_from: Path | None = None,
    tracker: str | None = None,
    config: dict[str, Any] | None = None,
) -> TrainResult:
    """Run optimizer steps up to ``train.max_steps``, resuming exactly from a checkpoint when given.

    Args:
        loop: the :class:`TrainingLoop`.
        resume_from: a checkpoint folder (from ``start_run``), or None for a fresh run.
        tracker: project name for accelerate's trackers (tensorboard), or None for none.
        config: the run's config as a nested dict, recorded by the trackers.

    Returns:
        A :class:`TrainResult`; the run's ``logs/train_log.jsonl`` has one record every ``log_every`` steps.
    """
    from tqdm.auto import tqdm

    acc, cfg, optim = loop.accelerator, loop.train, loop.optim
    out = Path(cfg.output_dir)
    if loop.ema is not None:
        loop.ema.to(acc.device)
        register_ema_checkpointing(acc, loop.ema)
    start, skipped_total, last_good = 0, 0, None
    if resume_from is not None:
        state = load_checkpoint(acc, resume_from, loop.scheduler)
        start, skipped_total, last_good = state["step"], state.get("skipped_images", 0), resume_from
    if tracker is not None:
        acc.init_trackers(tracker, config=flat_config(config or {}))
    log = JsonlLogger(out / "logs" / "train_log.jsonl", enabled=acc.is_main_process)
    log.log(
        {
            "event": "start",
            "world_size": acc.num_processes,
            "start_step": start,
            "resumed_from": str(resume_from) if resume_from else None,
        }
    )

    sample = loop.sample
    if sample is not None and "FSDP" in str(getattr(acc, "distributed_type", "")):
        logger.warning("no sample grids under FSDP: a sharded model cannot be sampled on one process")
        sample = None
    batches = iterate_batches(loop.loader, start * optim.grad_accum, acc)
    progress = tqdm(total=cfg.max_steps, initial=start, disable=not acc.is_local_main_process)
    metrics: dict[str, float] = {}
    kernels = training_kernels(cfg.fast_linear, acc.device)  # re-entered every micro-step
    tick, cpu_tick = time.perf_counter(), time.process_time()
    for step in range(start + 1, cfg.max_steps + 1):
        sums: dict[str, torch.Tensor] = {}
        skipped = 0
        for micro in range(optim.grad_accum):
            epoch, args, skips = _next_inputs(batches, loop.inputs)
            skipped += skips
            generator = step_generator(
                cfg.seed, (step - 1) * optim.grad_accum + micro, acc.process_index, acc.device
            )
            last = micro == optim.grad_accum - 1
            with contextlib.nullcontext() if last else acc.no_sync(loop.module), kernels:
                terms = loop.module(*args, generator)
                acc.backward(terms["loss"] / optim.grad_accum)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / optim.grad_accum
        # the loss on every process before the update: the weights and the last checkpoint stay good
        metrics = gather_metrics(acc, {**sums, "sum_skipped": float(skipped)}, step, last_good)
        skipped_total += int(metrics.pop("skipped"))
        lr = loop.optimizer.param_groups[0]["lr"]  # the rate of this step (get_last_lr is the next one's)
        # the norm is computed for clipping anyway; no clip = an infinite threshold (None under DeepSpeed)
        norm = acc.clip_grad_norm_(loop.module.parameters(), optim.grad_clip or float("inf"))
        if norm is not None:
            metrics["grad_norm"] = float(norm)
            if not torch.isfinite(torch.as_tensor(norm)):  # identical on every process after the all-reduce
                raise _stop(f"gradient norm ({float(norm)})", step, last_good)
        loop.optimizer.step()
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
        if loop.ema is not None:
            loop.ema.update_parameters(loop.ema_source)
        progress.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            elapsed, tick = time.perf_counter() - tick, time.perf_counter()
            cpu, cpu_tick = time.process_time() - cpu_tick, time.process_time()
            record = {
                "step": step,
                "epoch": epoch,
                "lr": lr,
                **metrics,
                "skipped_images": skipped_total,
                "seconds": elapsed,  # wall time of this logging window
                "cpu_seconds": cpu,  # CPU time of this process (all threads) in the window: equal-compute runs
            }
            log.log(record)
            acc.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}")
        if sample is not None and cfg.sample_every and step % cfg.sample_every == 0 and acc.is_main_process:
            sample(step, out / "samples" / f"step_{step:08d}.png")
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            weights = list(loop.module.parameters()) + (
                list(loop.ema.parameters()) if loop.ema is not None else []
            )
            if not _all_finite(acc, weights):
                raise _stop("weights", step, last_good)
            extra = {"skipped_images": skipped_total, "scheduler": loop.scheduler.state_dict()}
            last_good = save_checkpoint(acc, out / "checkpoints", step, cfg.keep_last, extra)
    progress.close()
    if sample is not None and acc.is_main_process:
        sample(cfg.max_steps, out / "samples" / "final.png")
    return TrainResult(
        step=cfg.max_steps, metrics=metrics, skipped_images=skipped_total, last_checkpoint=last_good
    )


def export_model(loop: TrainingLoop) -> torch.nn.Module:
    """The model to export: the EMA (with the live model's buffers) when there is one, else the trained model."""
    if loop.ema is not None:
        return ema_model_for_export(loop.ema, loop.ema_source)
    return loop.ema_source
