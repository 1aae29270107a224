"""Tests of tokenizer/conditioning.py: causality and prefix inputs."""

import pytest
import torch
import torch.nn.functional as F
from tiny import randomize_

from tokenizer import TOKENIZER_PRESETS
from tokenizer.conditioning import ConditionNetwork

CFG = TOKENIZER_PRESETS["tiny"]


def _vectors(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, n, CFG.codebook_dim, generator=generator), dim=-1)


def test_prefix_conditions_equal_prefix_of_full_conditions():
    net = randomize_(ConditionNetwork(CFG)).eval()
    vectors = _vectors(2, CFG.num_tokens)
    with torch.no_grad():
        full = net(vectors)
        assert full.shape == (2, CFG.num_tokens, CFG.condition_dim)
        for n in range(1, CFG.num_tokens + 1):
            torch.testing.assert_close(net(vectors[:, :n]), full[:, :n])


def test_group_conditions_unchanged_when_later_codes_change():
    net = randomize_(ConditionNetwork(CFG)).eval()
    vectors = _vectors(2, CFG.num_tokens)
    changed = vectors.clone()
    end = 2 * CFG.tokens_per_step
    changed[:, end:] = _vectors(2, CFG.num_tokens - end, seed=1)
    with torch.no_grad():
        a, b = net(vectors), net(changed)
    torch.testing.assert_close(a[:, :end], b[:, :end])
    assert not torch.allclose(a[:, end:], b[:, end:])


def test_rejects_more_than_num_tokens():
    net = ConditionNetwork(CFG)
    with pytest.raises(ValueError, match="between 1 and"):
        net(_vectors(1, CFG.num_tokens + 1))
