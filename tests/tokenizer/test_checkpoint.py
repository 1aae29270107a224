"""Tests of tokenizer.checkpoint: where a folder name is looked for (locally, or on the Hub)."""

import pytest

from tokenizer.checkpoint import resolve_folder


def test_a_missing_path_under_an_existing_folder_is_local(tmp_path, monkeypatch):
    """``checkpoints/dar-animal`` (a typo beside the shipped ``checkpoints/``) must not be sent to the Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    for missing in ("checkpoints/dar-animal", "./dar-animal", "a/b/c", str(tmp_path / "x")):
        with pytest.raises(FileNotFoundError, match=f"no pipeline folder at {missing}: pass a folder"):
            resolve_folder(missing, "pipeline")
    with pytest.raises(FileNotFoundError, match="not a local folder.*pass a local folder"):
        resolve_folder("no-such-owner-x/no-such-model", "pipeline")  # an owner/name id: the Hub, offline
