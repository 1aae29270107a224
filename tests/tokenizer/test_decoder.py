"""Tests of tokenizer/decoder.py: zero-init output, conditions enter only through adaLN, REPA head."""

import pytest
import torch
from tiny import randomize_

from tokenizer import TOKENIZER_PRESETS
from tokenizer.decoder import PixelDecoder

CFG = TOKENIZER_PRESETS["tiny"]


def _inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, CFG.image_size, CFG.image_size, generator=g)
    t = torch.rand(batch, generator=g)
    cond = torch.randn(batch, CFG.tokens_per_step, CFG.condition_dim, generator=g)
    return x, t, cond


def test_velocity_is_zero_at_initialisation():
    x, t, cond = _inputs()
    out = PixelDecoder(CFG)(x, t, cond)
    assert out.velocity.shape == x.shape and out.repa_features is None
    assert out.velocity.abs().max() == 0


def test_conditions_enter_only_through_adaln_modulation():
    decoder = randomize_(PixelDecoder(CFG)).eval()
    x, t, cond = _inputs()
    other = torch.randn_like(cond)
    with torch.no_grad():
        assert not torch.allclose(decoder(x, t, cond).velocity, decoder(x, t, other).velocity)
        for block in decoder.blocks:
            block.adaLN_modulation[1].weight.zero_()
        torch.testing.assert_close(decoder(x, t, cond).velocity, decoder(x, t, other).velocity)


def test_time_matters():
    decoder = randomize_(PixelDecoder(CFG)).eval()
    x, t, cond = _inputs()
    with torch.no_grad():
        assert not torch.allclose(decoder(x, t, cond).velocity, decoder(x, 1 - t, cond).velocity)


def test_repa_head_reads_pooled_features_entering_its_block():
    decoder = randomize_(PixelDecoder(CFG)).eval()
    x, t, cond = _inputs()
    captured = {}
    hook = decoder.blocks[CFG.repa_layer].register_forward_pre_hook(
        lambda m, args: captured.update(x=args[0])
    )
    with torch.no_grad():
        out = decoder(x, t, cond, return_repa=True)
    hook.remove()
    grid = CFG.decoder_grid
    tokens = captured["x"].transpose(1, 2).reshape(2, -1, grid, grid)
    pooled = torch.nn.functional.avg_pool2d(tokens, grid // CFG.repa_grid).flatten(2).transpose(1, 2)
    assert out.repa_features.shape == (2, CFG.repa_grid**2, CFG.repa_dim)
    torch.testing.assert_close(out.repa_features, decoder.repa_out(pooled))


def test_repa_request_without_head_raises():
    decoder = PixelDecoder(CFG.replace(repa_layer=None))
    assert decoder.repa_out is None
    with pytest.raises(ValueError, match="no REPA head"):
        decoder(*_inputs(), return_repa=True)
