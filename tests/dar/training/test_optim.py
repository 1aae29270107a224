"""Tests of dar.training.optim: LR schedules (warm-up, the paper's linear decay, cosine) and weight-decay groups."""

import math

import pytest
import torch

from dar.training.config import EMAConfig, OptimConfig
from dar.training.optim import LRSchedule, build_lr_scheduler, build_optimizer, weight_decay_param_groups


def test_warmup_then_constant():
    schedule = LRSchedule(OptimConfig(lr=2e-4, warmup_steps=4), max_steps=100)
    assert [schedule(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_paper_ar_linear_decay_in_steps():
    # 300 epochs at 1251 steps/epoch, lr 4e-4 -> 1e-5 linearly over the last 50 epochs
    cfg = OptimConfig(lr=4e-4, schedule="linear_decay", decay_start=250 * 1251, final_lr=1e-5)
    schedule = LRSchedule(cfg, max_steps=300 * 1251)
    lr = lambda s: cfg.lr * schedule(s)  # noqa: E731
    assert lr(0) == pytest.approx(4e-4) and lr(250 * 1251) == pytest.approx(4e-4)
    assert lr(275 * 1251) == pytest.approx((4e-4 + 1e-5) / 2)
    assert lr(300 * 1251) == pytest.approx(1e-5) and lr(400 * 1251) == pytest.approx(1e-5)
    values = [lr(s) for s in range(250 * 1251, 300 * 1251, 997)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_schedule_endpoints_and_midpoint():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", final_lr=0.1)
    schedule = LRSchedule(cfg, max_steps=110)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)


def test_scheduler_drives_optimizer_lr():
    model = torch.nn.Linear(3, 3)
    cfg = OptimConfig(lr=1e-3, warmup_steps=2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg, max_steps=10)
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3])


def test_bad_schedule_configs_raise():
    with pytest.raises(ValueError, match="decay_end"):
        OptimConfig(decay_start=10, decay_end=5)
    with pytest.raises(ValueError, match="decay_end > decay_start"):
        LRSchedule(OptimConfig(schedule="cosine", warmup_steps=10), max_steps=10)
    with pytest.raises(ValueError, match="grad_accum"):
        OptimConfig(grad_accum=0)
    with pytest.raises(ValueError, match="ema.decay"):
        EMAConfig(decay=1.0)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    decay, no_decay = weight_decay_param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2} and len(decay["params"]) == 2
    assert {p.ndim for p in no_decay["params"]} == {1} and len(no_decay["params"]) == 3


def test_scheduler_state_is_plain_json_and_restores_the_schedule():
    import json

    model = torch.nn.Linear(3, 3)
    cfg = OptimConfig(lr=1e-3, warmup_steps=2, schedule="cosine", final_lr=1e-5)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg, max_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))  # what trainer_state.json holds
    fresh_optimizer = build_optimizer(model, cfg)
    fresh = build_lr_scheduler(fresh_optimizer, cfg, max_steps=10)
    fresh.load_state_dict(state)
    for _ in range(3):
        optimizer.step(), scheduler.step(), fresh_optimizer.step(), fresh.step()
        assert fresh.get_last_lr() == pytest.approx(scheduler.get_last_lr())
