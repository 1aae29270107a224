"""What every training recipe does around its own model: set up, build the loop, train, finish.

A recipe builds only its model, loss module and data; the rest is shared::

    run = setup(cfg, "train_x")                          # accelerator, output folder, resume point, seed
    loop = build_loop(run, cfg, module, dataset, ema_source=model, inputs=..., sample=...)
    result = fit(run, loop, cfg)                         # dar.training.loop.train
    if run.accelerator.is_main_process:
        export_model(loop).save_pretrained(...)
    return finish(run, result, export_dir)

``recipe_main`` is the ``__main__`` of every recipe: logging per rank, ``--config`` / ``--set`` parsing.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dar.training.config_io import parse_config_args, to_dict
from dar.training.ema import build_ema
from dar.training.loop import TrainingLoop, TrainResult, train
from dar.training.optim import build_lr_scheduler, build_optimizer
from dar.training.run import Run, check_distributed_setup, micro_batch_size, start_run

# what the project raises with a message naming the fix (as dar.cli.USER_ERRORS, which recipes must not import)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)

__all__ = ["build_loop", "finish", "fit", "gathered_weights", "recipe_main", "setup"]


def setup(cfg: Any, name: str) -> Run:
    """:func:`~dar.training.run.start_run`, then TF32, the seed and the distributed-setup checks."""
    from accelerate.utils import set_seed

    run = start_run(cfg, name)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
    set_seed(cfg.train.seed)
    check_distributed_setup(run.accelerator, cfg.ema.enabled, cfg.optim.grad_accum)
    return run


def build_loop(
    run: Run,
    cfg: Any,
    module: torch.nn.Module,
    dataset: Any,
    *,
    ema_source: torch.nn.Module,
    inputs: Callable,
    sample: Callable[[int, Path], None] | None = None,
    collate_fn: Callable | None = None,
) -> TrainingLoop:
    """EMA of ``ema_source``, optimizer, LR schedule and shuffled loader, prepared and wrapped in a TrainingLoop.

    Args:
        run: from :func:`setup`.
        cfg: the recipe config (``data``, ``optim``, ``ema``, ``train`` sections).
        module: the loss module (``module(*inputs(batch), generator) -> {"loss": ...}``).
        dataset: the training dataset; batches of ``data.batch_size`` split over processes and accumulation.
        ema_source: the model whose weights are averaged and exported.
        inputs: ``batch -> tuple`` of forward arguments, or None for a batch with nothing usable.
        sample: ``(step, path)`` writing a sample grid, or None.
        collate_fn: the loader's collate function (default: torch's).
    """
    acc = run.accelerator
    ema = build_ema(ema_source, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    optimizer = build_optimizer(module, cfg.optim)  # weight decay on >= 2-D tensors only
    scheduler = build_lr_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=micro_batch_size(cfg.data.batch_size, acc.num_processes, cfg.optim.grad_accum),
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_fn,
    )
    module, optimizer, loader = acc.prepare(module, optimizer, loader)
    return TrainingLoop(
        accelerator=acc,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        train=cfg.train,
        optim=cfg.optim,
        inputs=inputs,
        ema=ema,
        ema_source=ema_source,
        sample=sample,
    )


def fit(run: Run, loop: TrainingLoop, cfg: Any) -> TrainResult:
    """:func:`~dar.training.loop.train` from the run's resume point, with trackers unless ``log_with: none``."""
    tracker = run.name if cfg.train.log_with != "none" else None
    return train(loop, run.resume_from, tracker, to_dict(cfg))


def gathered_weights(run: Run, loop: TrainingLoop) -> dict[str, torch.Tensor] | None:
    """The trained model's full state dict when there is no EMA (FSDP shards gathered), else None.

    Call it on every process (the gather is collective); pass the result to ``save_pretrained(state_dict=...)``.
    With an EMA the exported weights are the EMA's own, already whole.
    """
    if loop.ema is None:
        state = run.accelerator.get_state_dict(loop.module)
        unwrapped = run.accelerator.unwrap_model(loop.module)
        prefix = next(name for name, child in unwrapped.named_children() if child is loop.ema_source) + "."
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return None


def finish(run: Run, result: TrainResult, export_dir: Path) -> dict:
    """Wait for every process, close the trackers, and return the recipe's summary."""
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return {
        "step": result.step,
        "export_dir": str(export_dir),
        "metrics": result.metrics,
        "skipped_images": result.skipped_images,
    }


def recipe_main(config_class: type, main: Callable[[Any], Any], description: str) -> None:
    """A recipe's ``__main__``: INFO logs on rank 0 (warnings elsewhere), then ``main(config from argv)``.

    The errors the project raises to name a fix (a used ``output_dir``, a config value, a missing file) print one
    line and exit with status 2, as the ``dar`` command does; ``DAR_TRACEBACK=1`` shows the traceback. A
    non-finite loss or gradient is not one of them (it raises ``NonFiniteError``, with the traceback).
    """
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    cfg = parse_config_args(config_class, description=description)
    try:
        main(cfg)
    except USER_ERRORS as error:  # a used output_dir, a bad config value, a missing file: one line, exit 2
        if os.environ.get("DAR_TRACEBACK"):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)
