"""Tests of dar.convert.files: reading official checkpoint files in every form the converter accepts."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
import torch
from official_checkpoints import (
    official_gpt_state_dict,
    save,
)

from dar.convert import files


def test_load_bare_and_prefixed_and_kv_cache(tmp_path):
    sd = official_gpt_state_dict()
    noisy = {f"_orig_mod.{k}": v for k, v in sd.items()}
    noisy["_orig_mod.layers.0.attention.kv_cache.k_cache"] = torch.zeros(2, 2, 8, 64)
    noisy["_orig_mod.layers.0.attention.kv_cache.v_cache"] = torch.zeros(2, 2, 8, 64)
    for obj in (sd, noisy, {f"module.{k}": v for k, v in sd.items()}):
        loaded = files.load_official_state_dict(save(obj, tmp_path / "ckpt.pt"))
        assert sorted(loaded) == sorted(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_load_prefers_ema_over_model(tmp_path, caplog):
    ema, raw = official_gpt_state_dict(seed=1), official_gpt_state_dict(seed=2)
    with caplog.at_level("INFO", logger="dar.convert.files"):
        loaded = files.load_official_state_dict(
            save({"model": raw, "ema": ema, "steps": 5}, tmp_path / "c.pt")
        )
    assert torch.equal(loaded["norm.weight"], ema["norm.weight"])
    assert "['ema']" in caplog.text
    loaded = files.load_official_state_dict(
        save({"model": {"_orig_mod." + k: v for k, v in raw.items()}}, tmp_path / "m.pt")
    )
    assert torch.equal(loaded["norm.weight"], raw["norm.weight"])


def test_load_training_file_with_pickled_config(tmp_path, monkeypatch):
    """Training files pickle an argparse.Namespace and the official config_util.Config; weights_only still works."""

    class Config:  # stands for the official config_util.Config
        def __init__(self):
            self._data = {"model": {"vq_dim": 8}}

    Config.__module__, Config.__qualname__ = "config_util", "Config"
    monkeypatch.setitem(sys.modules, "config_util", types.SimpleNamespace(Config=Config))
    sd = official_gpt_state_dict()
    path = save(
        {"model": sd, "optimizer": {"state": {}}, "args": argparse.Namespace(lr=1e-4), "config": Config()},
        tmp_path / "t.pt",
    )
    monkeypatch.delitem(sys.modules, "config_util")
    loaded = files.load_official_state_dict(path)
    assert torch.equal(loaded["output.weight"], sd["output.weight"])


def test_load_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    sd = official_gpt_state_dict()
    save_file({f"_orig_mod.{k}": v for k, v in sd.items()}, str(tmp_path / "gpt.safetensors"))
    loaded = files.load_official_state_dict(tmp_path / "gpt.safetensors")
    assert sorted(loaded) == sorted(sd) and torch.equal(loaded["output.weight"], sd["output.weight"])


def test_load_legacy_non_zip_file(tmp_path):
    sd = official_gpt_state_dict()
    path = tmp_path / "legacy.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert torch.equal(files.load_official_state_dict(path)["norm.weight"], sd["norm.weight"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("just some notes\n"), "text file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: save({"model": {"lr": 0.1}, "steps": 3}, p), "holds no tensors"),
    ],
)
def test_load_rejects_foreign_files(tmp_path, make, message):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(ValueError, match=message):
        files.load_official_state_dict(path)


def test_load_rejects_truncated_file(tmp_path):
    path = save(official_gpt_state_dict(), tmp_path / "full.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be read as a PyTorch checkpoint.*zip archive"):
        files.load_official_state_dict(tmp_path / "cut.pt")


def test_missing_path_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="No such checkpoint file"):
        files.load_official_state_dict(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="names no file"):
        files.load_official_state_dict("showlab/D-AR")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time: patch the live value too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        files.load_official_state_dict("showlab/D-AR/D-AR-L-360K.pt")
