"""Tests of dar.training: LR schedules, weight-decay groups, EMA, NaN guard, resumable batch stream."""

import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from dar.train_loop import gather_metrics, iterate_batches, micro_batch_size, step_generator
from dar.training import (
    EMAConfig,
    LRSchedule,
    NonFiniteLossError,
    OptimConfig,
    build_ema,
    build_lr_scheduler,
    build_optimizer,
    check_finite_loss,
    ema_decay_at,
    ema_model_for_export,
    weight_decay_param_groups,
)


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


def test_ema_tracks_parameters_and_export_takes_live_buffers():
    model = torch.nn.BatchNorm1d(2)
    ema = build_ema(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, torch.full((2,), 1.1))
    model.running_mean.fill_(3.0)
    exported = ema_model_for_export(ema, model)
    assert torch.equal(exported.running_mean, model.running_mean)
    assert torch.allclose(exported.weight, torch.full((2,), 1.1))


def test_ema_warmup_follows_the_diffusers_schedule_and_caps_at_decay():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert ema_decay_at(0.999, 0, warmup=False) == 0.999
    model = torch.nn.Linear(1, 1, bias=False)
    ema = build_ema(model, decay=0.5)
    expected = None
    for n, value in enumerate([4.0, 0.0, 8.0, 2.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        d = ema_decay_at(0.5, n)  # n = updates before this one; the first one copies
        expected = value if expected is None else d * expected + (1 - d) * value
        assert ema.module.weight.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="decay"):
        build_ema(model, decay=1.0)


def test_nan_guard_names_the_step_and_checkpoint():
    check_finite_loss(torch.tensor(1.0), step=1)
    with pytest.raises(NonFiniteLossError, match=r"step 7.*checkpoint-00000005"):
        check_finite_loss(
            torch.tensor([1.0, float("nan")]), step=7, last_checkpoint="runs/x/checkpoint-00000005"
        )
    with pytest.raises(NonFiniteLossError, match="no checkpoint was saved yet"):
        check_finite_loss(float("inf"), step=1)


def test_gather_metrics_means_sums_and_guards():
    accelerator = Accelerator(cpu=True)
    out = gather_metrics(accelerator, {"loss": torch.tensor(2.0), "sum_skipped": 3}, step=1)
    assert out == {"loss": 2.0, "skipped": 3.0}
    with pytest.raises(NonFiniteLossError, match="step 4"):
        gather_metrics(accelerator, {"loss": torch.tensor(float("nan"))}, step=4)


def test_micro_batch_size_divides_or_explains():
    assert micro_batch_size(1024, 16, 2) == 32
    with pytest.raises(ValueError, match="multiple of 6"):
        micro_batch_size(8, 2, 3)


def test_step_generator_is_pure():
    a = torch.rand(3, generator=step_generator(0, 5, 1))
    assert torch.equal(a, torch.rand(3, generator=step_generator(0, 5, 1)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 6, 1)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 5, 0)))


class _Indexed(torch.utils.data.Dataset):
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([i, self.epoch])


def test_batch_stream_resumes_mid_epoch_exactly():
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    loader = accelerator.prepare(
        torch.utils.data.DataLoader(_Indexed(), batch_size=3, shuffle=True, drop_last=True)
    )
    stream = iterate_batches(loader, 0, accelerator)
    straight = [next(stream)[1] for _ in range(8)]  # crosses two epoch boundaries (3 batches per epoch)
    resumed_stream = iterate_batches(loader, 4, accelerator)
    resumed = [next(resumed_stream)[1] for _ in range(4)]
    for a, b in zip(straight[4:], resumed):
        assert torch.equal(a, b)
    assert straight[0][:, 1].eq(0).all() and straight[3][:, 1].eq(1).all()  # dataset epoch is set
    order = lambda batches: [b[:, 0].tolist() for b in batches]  # noqa: E731
    assert order(straight[0:3]) != order(straight[3:6])  # each epoch is reshuffled
