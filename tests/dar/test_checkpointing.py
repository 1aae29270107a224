"""Tests of dar.checkpointing: rotation, atomic save, resume latest, EMA through save_state hooks."""

import pytest
import torch
from accelerate import Accelerator

from dar.checkpointing import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_trainer_state,
    resolve_resume,
    save_checkpoint,
)
from dar.training import build_ema, register_ema_checkpointing


def _setup():
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def _train_step(model, optimizer):
    model(torch.randn(3, 4)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_rotation_keeps_last_k(tmp_path):
    accelerator, model, optimizer = _setup()
    for step in (1, 2, 3, 4):
        _train_step(model, optimizer)
        save_checkpoint(accelerator, tmp_path, step, keep_last=2, extra_state={"epoch": 0})
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert read_trainer_state(latest_checkpoint(tmp_path)) == {"step": 4, "epoch": 0}
    assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-00000004"
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("latest", tmp_path / "empty") is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-00000001"), tmp_path)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    accelerator, model, optimizer = _setup()
    save_checkpoint(accelerator, tmp_path, 1, keep_last=1)
    real_save_state = accelerator.save_state

    def dies_halfway(output_dir, **kwargs):
        real_save_state(output_dir, **kwargs)  # files are written ...
        raise KeyboardInterrupt("killed while saving")  # ... but the save never completes

    monkeypatch.setattr(accelerator, "save_state", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, tmp_path, 2, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000001"
    monkeypatch.undo()
    load_checkpoint(accelerator, latest_checkpoint(tmp_path))  # still loadable
    save_checkpoint(accelerator, tmp_path, 2, keep_last=1)  # the stale temp folder is cleaned up
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000002"]


def test_resume_restores_model_optimizer_and_ema(tmp_path):
    accelerator, model, optimizer = _setup()
    ema = build_ema(accelerator.unwrap_model(model), decay=0.5)
    register_ema_checkpointing(accelerator, ema)
    _train_step(model, optimizer)
    ema.update_parameters(model)
    path = save_checkpoint(accelerator, tmp_path, 1, keep_last=1)
    assert (path / "ema.safetensors").is_file()
    saved = {k: v.clone() for k, v in ema.state_dict().items()}
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        _train_step(model, optimizer)
        ema.update_parameters(model)
    state = load_checkpoint(accelerator, path)
    assert state["step"] == 1
    for key, value in saved.items():
        assert torch.equal(ema.state_dict()[key], value), key
    for key, value in saved_model.items():
        assert torch.equal(model.state_dict()[key], value), key
