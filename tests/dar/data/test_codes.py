"""Tests of dar.codes: shard round trip, tokenizer fingerprint, refusal of foreign codes."""

import json

import pytest
import torch

from dar.data.codes import (
    CodeDataset,
    CodeShardWriter,
    TokenizerMismatchError,
    load_codes,
    tokenizer_fingerprint,
    write_codes_index,
)


def _write(tmp_path, fingerprint, views=1):
    writer = CodeShardWriter(tmp_path, fingerprint, codebook_size=64, shard_size=4)
    codes = torch.randint(0, 64, (10, views, 8))
    writer.add(codes, torch.arange(10) % 3, torch.arange(10))
    files = writer.close()
    write_codes_index(tmp_path, fingerprint, num_tokens=8, codebook_size=64, num_classes=3, views=views)
    return codes, files


def test_round_trip_and_dtype(tmp_path):
    codes, files = _write(tmp_path, "ab" * 32)
    assert len(files) == 3  # 4 + 4 + 2 rows
    loaded = load_codes(tmp_path, expected_fingerprint="ab" * 32)
    assert loaded.codes.dtype == torch.int16 and torch.equal(loaded.codes.long(), codes)
    assert loaded.labels.tolist() == (torch.arange(10) % 3).tolist()
    assert loaded.index.num_rows == 10 and loaded.index.views == 1
    item = CodeDataset(loaded)[4]
    assert item["codes"].dtype == torch.int64 and item["codes"].shape == (8,)


def test_foreign_tokenizer_is_refused(tmp_path):
    _write(tmp_path, "ab" * 32)
    with pytest.raises(TokenizerMismatchError, match="Re-run recipes/extract_codes.py"):
        load_codes(tmp_path, expected_fingerprint="cd" * 32)


def test_mixed_shards_are_refused(tmp_path):
    _write(tmp_path, "ab" * 32)
    index = json.loads((tmp_path / "codes_index.json").read_text())
    index["tokenizer_fingerprint"] = "ef" * 32
    (tmp_path / "codes_index.json").write_text(json.dumps(index))
    with pytest.raises(TokenizerMismatchError, match="mixes code sets"):
        load_codes(tmp_path)


def test_out_of_range_codes_are_rejected(tmp_path):
    writer = CodeShardWriter(tmp_path, "ab", codebook_size=16)
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        writer.add(torch.full((2, 4), 16), torch.zeros(2, dtype=torch.long), torch.arange(2))


def test_fingerprint_tracks_weights_and_config():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 3)
    b = torch.nn.Linear(3, 3)
    b.load_state_dict(a.state_dict())
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    b.load_state_dict(a.state_dict())
    a.config, b.config = {"size": 1, "_name_or_path": "x"}, {"size": 1, "_name_or_path": "y"}
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    b.config = {"size": 2}
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)


def test_ten_crop_views_vary_with_epoch(tmp_path):
    _write(tmp_path, "ab" * 32, views=10)
    ds = CodeDataset(load_codes(tmp_path), seed=0)
    first = [ds[i]["codes"] for i in range(10)]
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i]["codes"]) for i, a in enumerate(first))
