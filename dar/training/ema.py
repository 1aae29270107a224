"""Exponential moving average of the weights, with warm-up, checkpointed as safetensors (DESIGN §6).

``build_ema`` wraps torch's ``AveragedModel``; with warm-up the decay after n updates is
``min(decay, (1 + n) / (10 + n))`` (diffusers' ``EMAModel`` default), so a short run is not dominated by its
random initialisation. The EMA is saved inside every ``accelerator.save_state`` folder as ``ema.safetensors``
and loaded strictly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from llama_ar.checkpoint import key_report

__all__ = ["build_ema", "ema_decay_at", "ema_model_for_export", "register_ema_checkpointing"]


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
    from safetensors.torch import load_file, load_model, save_model

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            save_model(ema, os.path.join(output_dir, filename))

    def load_hook(models: list, input_dir: str) -> None:
        path = os.path.join(input_dir, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint has no EMA; set ema.enabled=false")
        expected = {k: tuple(v.shape) for k, v in ema.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in load_file(path).items()}
        problems = key_report(expected, found)
        if problems:
            raise ValueError(
                f"the EMA in {path} does not fit the model ({problems}): resume with the same config"
            )
        load_model(ema, path, strict=True, device=str(next(ema.parameters()).device))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
