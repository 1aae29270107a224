"""Training throughput of the demo recipes against the same model's plain PyTorch step (DESIGN §9).

For each demo recipe (``recipes/configs/demo_{tokenizer,ar,dart}.yaml``) this part runs the recipe's own
``main(cfg)`` in this process (the code path of ``accelerate launch recipes/X.py``: data loading, the shared
:func:`dar.training.loop.train` with its syncs, clipping, EMA, logging) for a few steps in a temporary folder,
and reads its steps/s from the run's ``logs/train_log.jsonl`` (the seconds between log records, the first
record skipped as warm-up); only the loop length, cadences, output folder and LR schedule (constant: a few steps
cannot hold the demo's warm-up and decay) are overridden. Against it: the plain PyTorch step of the same model at the same batch (forward
through the model's training loss, backward, ``torch.optim.AdamW`` with the recipe's lr, ``zero_grad``; no
compile, torch's default kernels, one random in-memory batch, no clipping, no EMA), timed in groups of as many
steps before and after the recipe run. The ratio recipe / plain is the target (≥ 1.3).

The AR recipe trains on a code set; a random one (the demo shapes: 64 codes from a 512-entry codebook, 10
classes, 512 rows) is written to the temporary folder, so no tokenizer or extracted codes are needed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dar.training.config import ARTrainingConfig, DARTTrainingConfig, TokenizerTrainingConfig
from dar.training.config_io import load_config

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_random_codes(folder: Path, rows: int = 512, num_tokens: int = 64, codebook: int = 512) -> None:
    from dar.data.codes import CodeShardWriter, write_codes_index

    generator = torch.Generator().manual_seed(0)
    writer = CodeShardWriter(folder, "random-codes", codebook)
    codes = torch.randint(0, codebook, (rows, num_tokens), generator=generator)
    writer.add(codes, torch.arange(rows) % 10, torch.arange(rows))
    writer.close()
    write_codes_index(
        folder, "random-codes", num_tokens=num_tokens, codebook_size=codebook, num_classes=10, views=1
    )


def _plain_step(kind: str, cfg):
    """The plain step of the recipe's model at the recipe's batch: (step function, batch size)."""
    batch = cfg.data.batch_size
    generator = torch.Generator().manual_seed(0)
    if kind == "tokenizer":
        from tokenizer import DARTokenizer

        model = DARTokenizer.from_preset(cfg.model.preset, **cfg.model.overrides).train()
        size = model.config.image_size
        images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1

        def loss():
            return model.training_losses(images, generator).total

    elif kind == "AR":
        from llama_ar import ARConfig, VocabLayout, ar_loss, build_ar_model

        layout = VocabLayout(codebook_size=512, num_classes=10)
        config = ARConfig.from_preset(cfg.model.preset, **{"num_tokens": 64, **cfg.model.overrides})
        model = build_ar_model(config, layout).train()
        codes = torch.randint(0, 512, (batch, 64), generator=generator)
        labels = torch.arange(batch) % 10

        def loss():
            return ar_loss(
                model,
                labels,
                codes,
                layout,
                class_dropout=config.class_dropout,
                token_dropout=config.token_dropout,
                generator=generator,
            ).loss

    else:
        from dart import DARTModel

        model = DARTModel.from_preset(cfg.model.preset, **cfg.model.overrides).train()
        size = model.config.image_size
        images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
        labels = torch.arange(batch) % model.config.num_classes

        def loss():
            return model.training_losses(images, labels, generator).total

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)

    def step() -> None:
        loss().backward()
        optimizer.step()
        optimizer.zero_grad()

    return step, batch


def _time_groups(step, steps: int, groups: int) -> list[float]:
    rates = []
    for _ in range(groups):
        tick = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - tick))
    return rates


def _recipe_rate(kind: str, file: str, cls, log_every: int, records: int, folder: Path) -> float:
    recipe = {"tokenizer": "train_tokenizer", "AR": "train_llama_ar", "dart": "train_dart"}[kind]
    overrides = [
        f"train.max_steps={log_every * records}",
        f"train.log_every={log_every}",
        f"train.save_every={log_every * records}",
        "train.sample_every=0",
        "train.num_samples=1",
        "train.log_with=none",
        f"train.output_dir={folder / 'run'}",
        "optim.schedule=constant",  # a few steps cannot hold the demo's warm-up + decay; speed does not change
        "optim.warmup_steps=1",
    ]
    if kind == "AR":
        _write_random_codes(folder / "codes")
        overrides += [f"data.path={folder / 'codes'}", "model.tokenizer_path=null"]
    cfg = load_config(CONFIGS / file, cls, overrides)
    _recipe(recipe).main(cfg)
    lines = (folder / "run" / "logs" / "train_log.jsonl").read_text().splitlines()
    seconds = [r["seconds"] for r in map(json.loads, lines) if "seconds" in r][1:]  # first: warm-up
    return statistics.median(log_every / s for s in seconds)


def bench(quick: bool = False) -> list[dict]:
    """Recipe steps/s (its own loop) vs the plain PyTorch step of the same model, per demo recipe."""
    log_every, records = (2, 2) if quick else (3, 4)
    rows = []
    parts = (
        ("tokenizer", "demo_tokenizer.yaml", TokenizerTrainingConfig),
        ("AR", "demo_ar.yaml", ARTrainingConfig),
        ("dart", "demo_dart.yaml", DARTTrainingConfig),
    )
    for kind, file, cls in parts:
        cfg = load_config(CONFIGS / file, cls)
        step, batch = _plain_step(kind, cfg)
        logger.info("train: timing the %s recipe (%s) and its plain step ...", kind, file)
        _time_groups(step, 2, 1)  # warm-up
        plain = _time_groups(step, log_every, records // 2)
        with tempfile.TemporaryDirectory() as tmp:
            recipe = _recipe_rate(kind, file, cls, log_every, records, Path(tmp))
        plain = statistics.median(plain + _time_groups(step, log_every, records // 2))
        threads = torch.get_num_threads()
        rows += [
            {
                "name": f"train {kind}: recipe steps/s ({file}, batch {batch})",
                "value": recipe,
                "unit": "steps/s",
                "ratio": recipe / plain,
                "note": f"the recipe's main() in this process, {log_every}-step log intervals after the first; "
                f"ratio = recipe / plain step (target ≥ 1.3); {threads} threads",
            },
            {
                "name": f"train {kind}: plain PyTorch step (same model and batch)",
                "value": plain,
                "unit": "steps/s",
                "note": f"forward loss, backward, AdamW, zero_grad; median of {log_every}-step groups before and "
                f"after the recipe run; {threads} threads",
            },
            {
                "name": f"train {kind}: projected demo run ({cfg.train.max_steps} steps)",
                "value": cfg.train.max_steps / recipe / 60,
                "unit": "min",
            },
        ]
    return rows
