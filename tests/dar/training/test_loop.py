"""Tests of dar.training.loop: the one training loop of every recipe — metrics, the non-finite guard on the loss,
the gradients and the weights, the resumable batch stream — on a real (CPU) accelerator and a toy model."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from dar.training.checkpoints import list_checkpoints, read_trainer_state
from dar.training.config import OptimConfig, TrainConfig
from dar.training.ema import build_ema
from dar.training.loop import (
    NonFiniteError,
    TrainingLoop,
    gather_metrics,
    iterate_batches,
    read_jsonl,
    step_generator,
    train,
)
from dar.training.optim import build_lr_scheduler, build_optimizer
from dar.training.run import micro_batch_size


class _Regression(torch.nn.Module):
    """A toy loss module: forward(x, y, generator) -> {"loss": mse}."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, y, generator=None):
        return {"loss": (self.linear(x) - y).pow(2).mean()}


def _loop(tmp_path: Path, max_steps: int = 6, poison=None, ema: bool = True, save_every: int = 2):
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    model = _Regression()
    x = torch.randn(32, 4)
    data = [{"x": x[i], "y": x[i].sum(0, keepdim=True)} for i in range(32)]
    optim = OptimConfig(lr=5e-2, warmup_steps=2)
    cfg = TrainConfig(
        max_steps=max_steps,
        save_every=save_every,
        log_every=1,
        output_dir=str(tmp_path),
        log_with="none",
        keep_last=10,
    )
    averaged = build_ema(model, 0.9) if ema else None
    optimizer = build_optimizer(model, optim)
    scheduler = build_lr_scheduler(optimizer, optim, max_steps)
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, drop_last=True)
    module, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if poison is not None:
        poison(module)
    return TrainingLoop(
        accelerator=accelerator,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        train=cfg,
        optim=optim,
        inputs=lambda b: (b["x"], b["y"]),
        ema=averaged,
        ema_source=model,
    )


def test_training_logs_falls_and_records_the_scheduler_as_json(tmp_path):
    result = train(_loop(tmp_path, max_steps=40, save_every=20))
    log = [r for r in read_jsonl(tmp_path / "logs" / "train_log.jsonl") if "step" in r]
    assert [r["step"] for r in log] == list(range(1, 41)) and all(r["grad_norm"] > 0 for r in log)
    first, last = (sum(r["loss"] for r in part) / 5 for part in (log[:5], log[-5:]))
    assert last < 0.5 * first
    state = read_trainer_state(result.last_checkpoint)
    assert state["step"] == 40 and state["scheduler"]["last_epoch"] == 40  # plain JSON, not a pickle
    assert not list(result.last_checkpoint.glob("custom_checkpoint_*.pkl"))


def test_resume_continues_exactly(tmp_path):
    straight = train(_loop(tmp_path / "a", max_steps=6))
    train(_loop(tmp_path / "b", max_steps=4, save_every=4))
    resumed = train(
        _loop(tmp_path / "b", max_steps=6), resume_from=tmp_path / "b" / "checkpoints" / "checkpoint-00000004"
    )
    assert resumed.metrics["loss"] == pytest.approx(straight.metrics["loss"], rel=1e-6)
    a = json.loads((straight.last_checkpoint / "trainer_state.json").read_text())["scheduler"]
    b = json.loads((resumed.last_checkpoint / "trainer_state.json").read_text())["scheduler"]
    assert a["_last_lr"] == pytest.approx(b["_last_lr"])


def test_a_nan_gradient_with_a_finite_loss_stops_before_the_update(tmp_path):
    calls = {"n": 0}

    def poison(module):
        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == 3 else grad  # the third backward: step 3

        module.linear.weight.register_hook(hook)

    loop = _loop(tmp_path, poison=poison)
    with pytest.raises(NonFiniteError, match=r"gradient norm.*step 3.*checkpoint-00000002"):
        train(loop)
    assert torch.isfinite(loop.module.linear.weight).all()  # never applied
    steps = [step for step, _ in list_checkpoints(tmp_path / "checkpoints")]
    assert steps == [2]  # nothing was saved after the bad step


def test_non_finite_weights_are_never_saved(tmp_path):
    loop = _loop(tmp_path)
    original = loop.optimizer.step

    def corrupting_step(*args, **kwargs):  # an update that leaves a NaN weight with finite loss and gradients
        original(*args, **kwargs)
        if loop.scheduler.last_epoch == 3:  # the update of step 4, which is then saved
            with torch.no_grad():
                loop.module.linear.bias.fill_(float("nan"))

    loop.optimizer.step = corrupting_step
    with pytest.raises(NonFiniteError, match=r"non-finite weights at step 4.*checkpoint-00000002"):
        train(loop)
    for _, path in list_checkpoints(tmp_path / "checkpoints"):  # every saved checkpoint is finite
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(path / "model.safetensors").values())


def test_gather_metrics_means_sums_and_guards():
    accelerator = Accelerator(cpu=True)
    out = gather_metrics(accelerator, {"loss": torch.tensor(2.0), "sum_skipped": 3}, step=1)
    assert out == {"loss": 2.0, "skipped": 3.0}
    with pytest.raises(NonFiniteError, match="step 4"):
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
