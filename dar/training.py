"""Training utilities shared by the recipes: configs, EMA, LR schedules, NaN guard, batching (DESIGN §6, §10).

Implements the optimisation side of the paper's training setups (reference §3: tokenizer AdamW 2e-4,
β = (0.9, 0.95), warm-up 500, EMA 0.999; §4.2: AR AdamW 4e-4, weight decay 0.05 on ≥ 2-D tensors, linear decay
to 1e-5 over the last 50 of 300 epochs, gradient clip 1.0). Checkpoints live in ``dar.checkpointing``, code
shards in ``dar.codes``, loop helpers (accelerator, batch stream, metrics) in ``dar.train_loop``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

logger = logging.getLogger(__name__)

__all__ = [
    "DebugConfig",
    "EMAConfig",
    "LRSchedule",
    "NonFiniteLossError",
    "OptimConfig",
    "TrainConfig",
    "build_ema",
    "ema_decay_at",
    "build_lr_scheduler",
    "build_optimizer",
    "check_finite_loss",
    "ema_model_for_export",
    "register_ema_checkpointing",
    "weight_decay_param_groups",
]

Schedule = Literal["constant", "cosine", "linear_decay"]


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (all step counts are optimizer steps).

    Attributes:
        lr: peak learning rate.
        betas: AdamW (β1, β2).
        weight_decay: decoupled weight decay, applied to tensors with ≥ 2 dims only (biases, norms: 0).
        eps: AdamW epsilon.
        warmup_steps: linear warm-up from lr/warmup_steps to lr over the first ``warmup_steps`` steps.
        schedule: after warm-up, ``constant``, ``cosine`` or ``linear_decay`` from lr to ``final_lr``.
        decay_start: first step of the decay (default: ``warmup_steps``).
        decay_end: step where ``final_lr`` is reached and kept (default: ``train.max_steps``).
        final_lr: learning rate at and after ``decay_end``.
        grad_clip: clip the global gradient norm to this value; None disables clipping.
        grad_accum: micro-batches accumulated per optimizer step.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    decay_start: int | None = None
    decay_end: int | None = None
    final_lr: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.final_lr < 0:
            raise ValueError(f"optim.lr must be > 0 and optim.final_lr >= 0, got {self.lr}, {self.final_lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("optim.weight_decay and optim.warmup_steps must be >= 0")
        if self.schedule not in ("constant", "cosine", "linear_decay"):
            raise ValueError(
                f"optim.schedule must be constant, cosine or linear_decay, got {self.schedule!r}"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if self.decay_start is not None and self.decay_end is not None and self.decay_end <= self.decay_start:
            raise ValueError(
                f"optim.decay_end ({self.decay_end}) must be > optim.decay_start ({self.decay_start})"
            )


@dataclass
class EMAConfig:
    """Exponential moving average of the parameters (buffers are taken from the live model at export)."""

    enabled: bool = True
    decay: float = 0.999
    # decay_n = min(decay, (1 + n) / (10 + n)) after n updates (diffusers' EMAModel default): without it the
    # random initial weights keep a weight of decay**steps (22% after 1,500 steps at 0.999) in short runs.
    warmup: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"ema.decay must lie in (0, 1), got {self.decay}")


@dataclass
class TrainConfig:
    """Loop length, checkpointing, logging and precision.

    Attributes:
        max_steps: optimizer steps of the run.
        save_every: ``accelerator.save_state`` every N steps (and at the last step).
        keep_last: number of checkpoints kept (older ones are deleted after a successful save).
        log_every: log (tensorboard + ``logs/train_log.jsonl``) every N steps.
        sample_every: write a sample grid every N steps (0: only at the end).
        num_samples: images in a sample grid.
        seed: seed of the model init, data order, augmentations and per-step noise.
        output_dir: run folder (``checkpoints/``, ``logs/``, ``samples/``, ``export/``).
        mixed_precision: ``auto`` (bf16 on a CUDA device with bf16 support, else fp32), ``no``, ``fp16``, ``bf16``.
        log_with: ``tensorboard`` (when installed) or ``none``.
        allow_tf32: enable TF32 matmuls on CUDA.
        resume: ``latest`` (newest complete checkpoint in ``output_dir``, if any) or a checkpoint directory.
    """

    max_steps: int = 1000
    save_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    sample_every: int = 0
    num_samples: int = 8
    seed: int = 0
    output_dir: str = "runs/default"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    log_with: Literal["tensorboard", "none"] = "tensorboard"
    allow_tf32: bool = True
    resume: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "save_every", "keep_last", "log_every", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ValueError(f"train.sample_every must be >= 0, got {self.sample_every}")


@dataclass
class DebugConfig:
    """Fault injection for tests: ``nan_at_step`` makes the loss of that step NaN."""

    nan_at_step: int | None = None


# --------------------------------------------------------------------------------------------- optimizer


def weight_decay_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on trainable tensors with ≥ 2 dims (weights, embeddings), none on 1-D (norms, biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``weight_decay_param_groups`` with the config's lr, betas and eps."""
    groups = weight_decay_param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


class LRSchedule:
    """Learning-rate multiplier per optimizer step (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps``. Then 1 until ``decay_start``, then
    ``constant`` (1), ``linear_decay`` or ``cosine`` from 1 to ``final_lr / lr`` at ``decay_end``, and
    ``final_lr / lr`` after it.
    """

    def __init__(self, cfg: OptimConfig, max_steps: int) -> None:
        self.warmup_steps = cfg.warmup_steps
        self.schedule = cfg.schedule
        self.decay_start = cfg.warmup_steps if cfg.decay_start is None else cfg.decay_start
        self.decay_end = max_steps if cfg.decay_end is None else cfg.decay_end
        self.final_ratio = cfg.final_lr / cfg.lr
        if self.schedule != "constant" and self.decay_end <= self.decay_start:
            raise ValueError(
                f"the {self.schedule} schedule needs decay_end > decay_start, got {self.decay_start} -> "
                f"{self.decay_end}; set optim.decay_start / optim.decay_end or train.max_steps"
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant" or step < self.decay_start:
            return 1.0
        progress = min(1.0, (step - self.decay_start) / (self.decay_end - self.decay_start))
        if self.schedule == "linear_decay":
            return 1.0 + progress * (self.final_ratio - 1.0)
        return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` driven by ``LRSchedule``; step it once per optimizer step (not through accelerate.prepare)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(cfg, max_steps))


# --------------------------------------------------------------------------------------------- EMA


def ema_decay_at(decay: float, num_updates: int, warmup: bool = True) -> float:
    """The decay used for update number ``num_updates`` + 1: ``min(decay, (1 + n) / (10 + n))`` with warm-up."""
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates)) if warmup else decay


def _warmup_ema_multi_avg_fn(decay: float) -> Callable[..., None]:
    @torch.no_grad()
    def update(ema_params: list[Tensor], params: list[Tensor], num_averaged: Tensor) -> None:
        weight = 1.0 - ema_decay_at(decay, int(num_averaged))
        torch._foreach_lerp_(ema_params, params, weight)

    return update


def build_ema(model: torch.nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """EMA of the parameters (``p_ema ← d·p_ema + (1 − d)·p``), as torch's ``AveragedModel``.

    With ``warmup`` the decay after n updates is ``min(decay, (1 + n) / (10 + n))`` (see :func:`ema_decay_at`),
    so a short run is not dominated by its random initialisation; without it ``d = decay`` throughout.
    The first ``update_parameters`` call copies the parameters; buffers are not averaged (use
    ``ema_model_for_export`` to take them from the live model). Build it from the unwrapped model, before
    ``accelerator.prepare``, and update it with ``ema.update_parameters(accelerator.unwrap_model(model))``.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
    avg_fn = _warmup_ema_multi_avg_fn(decay) if warmup else get_ema_multi_avg_fn(decay)
    ema = AveragedModel(model, multi_avg_fn=avg_fn, use_buffers=False)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_model_for_export(ema: AveragedModel, model: torch.nn.Module) -> torch.nn.Module:
    """The averaged module with the live model's buffers (e.g. an EMA-updated VQ codebook) copied in."""
    for (name, ema_buffer), (other_name, buffer) in zip(ema.module.named_buffers(), model.named_buffers()):
        if name != other_name:
            raise ValueError(f"EMA and model buffers differ: {name!r} vs {other_name!r}")
        ema_buffer.copy_(buffer)
    return ema.module


def register_ema_checkpointing(
    accelerator: Any, ema: AveragedModel, filename: str = "ema.safetensors"
) -> None:
    """Save / load the EMA as ``<checkpoint>/ema.safetensors`` inside ``accelerator.save_state``/``load_state``.

    Uses accelerate's save/load pre-hooks and safetensors (no pickle); loading is strict.
    """
    from safetensors.torch import load_model, save_model

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            save_model(ema, os.path.join(output_dir, filename))

    def load_hook(models: list, input_dir: str) -> None:
        path = os.path.join(input_dir, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint has no EMA; set ema.enabled=false")
        missing, unexpected = load_model(ema, path, strict=False, device=str(next(ema.parameters()).device))
        if missing or unexpected:
            raise ValueError(
                f"EMA in {path} does not match the model: missing {missing}, unexpected {unexpected}"
            )

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


# --------------------------------------------------------------------------------------------- loop helpers


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before updating the weights."""


def check_finite_loss(
    loss: float | torch.Tensor, step: int, last_checkpoint: str | os.PathLike | None = None
) -> None:
    """Raise ``NonFiniteLossError`` naming the step (1-based) when ``loss`` holds a NaN or inf.

    Call it before ``backward``/``optimizer.step`` so that the weights and the last checkpoint stay good.
    """
    value = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
    if bool(torch.isfinite(value).all()):
        return
    where = (
        f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
    )
    raise NonFiniteLossError(
        f"non-finite loss ({value.flatten().tolist()}) at step {step}; the run stopped before updating the "
        f"weights and {where}. Lower optim.lr, raise optim.warmup_steps or check the data, then --resume latest."
    )
