"""Tests of dar.training.checkpoints: rotation, atomic fsynced save, resume latest with fallback from damaged
checkpoints, EMA through save_state hooks."""

import pytest
import torch
from accelerate import Accelerator

from dar.training.checkpoints import (
    DamagedCheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_trainer_state,
    resolve_resume,
    save_checkpoint,
)
from dar.training.ema import build_ema, register_ema_checkpointing


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


@pytest.mark.parametrize(
    "damage, named",
    [
        (
            lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-50]),
            "model",
        ),
        (lambda p: (p / "optimizer.bin").unlink(), "optimizer.bin"),
        (
            lambda p: (p / "optimizer.bin").write_bytes((p / "optimizer.bin").read_bytes()[:100]),
            "optimizer.bin",
        ),
        (lambda p: (p / "trainer_state.json").write_text("[1, 2]"), "trainer_state.json"),
    ],
)
def test_resume_latest_falls_back_from_a_damaged_newest_checkpoint(tmp_path, caplog, damage, named):
    accelerator, model, optimizer = _setup()
    for step in (1, 2):
        _train_step(model, optimizer)
        save_checkpoint(accelerator, tmp_path, step, keep_last=2)
    damage(tmp_path / "checkpoint-00000002")
    with caplog.at_level("WARNING"):
        assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-00000001"
    assert named in caplog.text and "previous complete checkpoint" in caplog.text
    with pytest.raises(
        (DamagedCheckpointError, FileNotFoundError), match=named
    ):  # named explicitly: no fallback
        resolve_resume(str(tmp_path / "checkpoint-00000002"), tmp_path)


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    accelerator, model, optimizer = _setup()
    save_checkpoint(accelerator, tmp_path, 1, keep_last=2)
    (tmp_path / "checkpoint-00000001" / "optimizer.bin").unlink()
    with pytest.raises(DamagedCheckpointError, match="every checkpoint"):
        resolve_resume("latest", tmp_path)


def test_every_file_of_a_checkpoint_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    import os

    accelerator, model, optimizer = _setup()
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd)
    )
    monkeypatch.setattr(os, "replace", lambda a, b: renamed.append((len(synced), a)) or real_replace(a, b))
    path = save_checkpoint(accelerator, tmp_path, 1, keep_last=1)
    files = {f.name for f in path.iterdir()}
    synced_before_rename = {os.path.basename(p) for p in synced[: renamed[0][0]]}
    assert files <= synced_before_rename, files - synced_before_rename
