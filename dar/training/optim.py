"""AdamW with the recipes' weight-decay groups and learning-rate schedules (reference §3, §4.2).

Tokenizer: AdamW 2e-4, β = (0.9, 0.95), warm-up 500. AR: AdamW 4e-4, weight decay 0.05 on ≥ 2-D tensors, linear
decay to 1e-5 over the last 50 of 300 epochs. The scheduler's state is plain numbers, saved as JSON with the
checkpoint (never pickled).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dar.training.config import OptimConfig

__all__ = ["LRSchedule", "build_lr_scheduler", "build_optimizer", "weight_decay_param_groups"]


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
    """AdamW over ``weight_decay_param_groups`` with the config's lr, betas and eps.

    The fused implementation (one kernel over all tensors) is used where PyTorch has it: every parameter a
    floating-point tensor on the CPU or a CUDA device; otherwise the default (foreach) one.
    """
    groups = weight_decay_param_groups(model, cfg.weight_decay)
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


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
