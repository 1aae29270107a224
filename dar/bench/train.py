"""Training throughput of both recipes at the demo configs: optimizer steps/s (DESIGN §9).

Times the recipes' step in this process (no ``accelerate launch``): forward through ``training_losses`` /
``ar_loss``, backward, gradient clipping, AdamW and the EMA update where the config enables it, on random
inputs of the demo shapes (32 px images; 64 codes from a 512-entry codebook, 10 classes), fp32 on CPU. The
batch, model preset and optimizer settings come from ``recipes/configs/demo_{tokenizer,ar}.yaml``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from dar.training.config import ARTrainingConfig, TokenizerTrainingConfig
from dar.training.config_io import load_config
from dar.training.ema import build_ema
from dar.training.optim import build_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _config(name: str, cls):
    path = CONFIGS / name
    return load_config(path if path.is_file() else None, cls), path.is_file()


def _time_steps(step, warmup: int, steps: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        tick = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - tick))
    return statistics.median(rates)


def _tokenizer_step(cfg: TokenizerTrainingConfig):
    from tokenizer import DARTokenizer

    tok = DARTokenizer.from_preset(cfg.model.preset, **cfg.model.overrides).train()
    ema = build_ema(tok, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    optimizer = build_optimizer(tok, cfg.optim)
    batch = cfg.data.batch_size // cfg.optim.grad_accum
    images = torch.rand(batch, 3, tok.config.image_size, tok.config.image_size) * 2 - 1
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        for _ in range(cfg.optim.grad_accum):
            (tok.training_losses(images, generator).total / cfg.optim.grad_accum).backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(tok.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(tok)

    return step, cfg.data.batch_size


def _ar_step(cfg: ARTrainingConfig, codebook_size: int = 512, num_classes: int = 10, num_tokens: int = 64):
    from llama_ar import ARConfig, VocabLayout, ar_loss, build_ar_model

    layout = VocabLayout(codebook_size=codebook_size, num_classes=num_classes)
    ar_config = ARConfig.from_preset(cfg.model.preset, **{"num_tokens": num_tokens, **cfg.model.overrides})
    model = build_ar_model(ar_config, layout).train()
    ema = build_ema(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    optimizer = build_optimizer(model, cfg.optim)
    batch = cfg.data.batch_size // cfg.optim.grad_accum
    codes = torch.randint(0, codebook_size, (batch, ar_config.num_tokens))
    labels = torch.arange(batch) % num_classes
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        for _ in range(cfg.optim.grad_accum):
            result = ar_loss(
                model,
                labels,
                codes,
                layout,
                class_dropout=ar_config.class_dropout,
                token_dropout=ar_config.token_dropout,
                generator=generator,
            )
            (result.loss / cfg.optim.grad_accum).backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)

    return step, cfg.data.batch_size


def bench(quick: bool = False) -> list[dict]:
    """Steps/s of the tokenizer and AR recipes at their demo configs, plus the projected demo wall time."""
    warmup, steps, repeats = (1, 2, 1) if quick else (2, 5, 3)
    rows = []
    parts = (
        ("tokenizer", "demo_tokenizer.yaml", TokenizerTrainingConfig, _tokenizer_step),
        ("AR", "demo_ar.yaml", ARTrainingConfig, _ar_step),
    )
    for label, file, cls, build in parts:
        cfg, found = _config(file, cls)
        step, batch = build(cfg)
        rate = _time_steps(step, warmup, steps, repeats)
        note = (
            f"{file}, batch {batch}, {torch.get_num_threads()} threads"
            if found
            else f"{file} missing: defaults"
        )
        rows.append(
            {"name": f"train {label}: steps/s (demo config)", "value": rate, "unit": "steps/s", "note": note}
        )
        rows.append(
            {"name": f"train {label}: images/s (demo config)", "value": rate * batch, "unit": "img/s"}
        )
        minutes = cfg.train.max_steps / rate / 60
        rows.append(
            {
                "name": f"train {label}: projected demo run ({cfg.train.max_steps} steps)",
                "value": minutes,
                "unit": "min",
            }
        )
    return rows
