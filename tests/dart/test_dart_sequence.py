"""Patches, the sequence layout and the three attention masks (as index sets, before any model is involved)."""

import pytest
import torch

from dart.sequence import SequenceLayout, additive_mask, patchify, unpatchify


def test_patchify_round_trip_and_raster_order():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 4, 12)
    # token 1 is the top-right patch; its values are ordered (channel, row, column)
    torch.testing.assert_close(tokens[0, 1], x[0, :, 0:2, 2:4].reshape(-1))
    assert torch.equal(unpatchify(tokens, 2, 3), x)
    with pytest.raises(ValueError, match="patches"):
        patchify(torch.zeros(1, 3, 5, 5), 2)


def test_layout_positions_and_levels():
    layout = SequenceLayout(num_levels=3, tokens_per_level=2, mask_kind="block_causal")
    assert layout.full_length == 7 and layout.input_length == 7
    assert layout.level_ids().tolist() == [4, 3, 3, 2, 2, 1, 1]  # class token counts as level T + 1
    assert layout.position_ids().tolist() == [0, 1, 2, 1, 2, 1, 2]  # same spatial ids at every level
    assert [layout.level_start(t) for t in (3, 2, 1)] == [1, 3, 5]
    shifted = SequenceLayout(3, 2, "token_causal")
    assert shifted.input_length == 6 and shifted.output_start(3) == 0 and shifted.output_start(1) == 4


def _levels_seen(layout, level):
    """Levels (T + 1 = class token) that a query of the given level may attend to."""
    row = layout.mask()[layout.level_start(level)]
    return sorted(set(layout.level_ids()[row].tolist()))


def test_block_causal_mask():
    layout = SequenceLayout(4, 3, "block_causal")
    for level in range(1, 5):
        assert _levels_seen(layout, level) == list(range(level, 6))  # its own level, all noisier ones, class
    mask = layout.mask()
    block = slice(layout.level_start(2), layout.level_start(2) + 3)
    assert bool(mask[block, block].all())  # bidirectional inside a level
    assert mask[0].tolist() == [True] + [False] * 12  # the class token sees only itself


def test_markovian_mask():
    layout = SequenceLayout(4, 3, "markovian")
    assert _levels_seen(layout, 4) == [4, 5]
    for level in range(1, 4):
        assert _levels_seen(layout, level) == [level, level + 1, 5]
    own = SequenceLayout(4, 3, "own_level")
    for level in range(1, 5):
        assert _levels_seen(own, level) == [level, 5]


def test_token_causal_mask():
    layout = SequenceLayout(2, 3, "token_causal")
    assert torch.equal(layout.mask(), torch.ones(7, 7, dtype=torch.bool).tril())


@pytest.mark.parametrize("kind", ["block_causal", "markovian", "own_level", "token_causal"])
def test_partial_rows_are_the_full_mask_cut_at_the_block_end(kind):
    layout = SequenceLayout(3, 4, kind)
    full = layout.mask()
    for level in (3, 2, 1):
        start = layout.level_start(level)
        end = start + 4
        assert torch.equal(layout.mask(rows=(start, end)), full[start:end, :end])
        assert not full[start:end, end:].any()  # nothing a cache would not hold yet
    assert torch.equal(layout.mask(rows=(0, 5)), full[:5, :5])
    with pytest.raises(ValueError, match="rows"):
        layout.mask(rows=(3, 2))


def test_additive_mask():
    allowed = torch.tensor([[True, False], [True, True]])
    mask = additive_mask(allowed, torch.float32)
    assert mask.shape == (1, 1, 2, 2) and mask.dtype == torch.float32
    assert mask[0, 0, 0, 0] == 0 and mask[0, 0, 0, 1] == torch.finfo(torch.float32).min
    with pytest.raises(ValueError, match="mask_kind"):
        SequenceLayout(2, 2, "causal")
