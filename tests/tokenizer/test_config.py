"""Tests of tokenizer/config.py: presets, derived quantities, validation, dict round trip."""

import pytest

from tokenizer import TOKENIZER_PRESETS, TokenizerConfig


def test_presets_have_consistent_groups():
    for name, cfg in TOKENIZER_PRESETS.items():
        assert cfg.tokens_per_step * cfg.num_steps == cfg.num_tokens, name
        assert cfg.image_size % cfg.encoder_patch_size == 0 and cfg.image_size % cfg.decoder_patch_size == 0


def test_tokenizer_v1_matches_official_sizes():
    cfg = TOKENIZER_PRESETS["tokenizer_v1"]
    assert (cfg.image_size, cfg.encoder_patch_size, cfg.encoder_dim) == (256, 16, 768)
    assert (cfg.num_encoder_layers, cfg.num_condition_layers, cfg.num_decoder_layers) == (8, 8, 12)
    assert (cfg.decoder_patch_size, cfg.codebook_size, cfg.codebook_dim) == (8, 16384, 8)
    assert (cfg.num_tokens, cfg.num_steps, cfg.tokens_per_step) == (256, 8, 32)
    assert (cfg.data_scale, cfg.time_shift, cfg.head_dim) == (0.6, 2.0, 64)
    assert (cfg.repa_layer, cfg.repa_hidden_dim, cfg.repa_dim, cfg.repa_grid) == (8, 2048, 768, 16)
    assert cfg.position_table_size == 1024
    assert TOKENIZER_PRESETS["tiny"].position_table_size == TOKENIZER_PRESETS["tiny"].num_tokens


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_tokens": 250}, "multiple of num_steps"),
        ({"image_size": 250}, "multiple of encoder_patch_size"),
        ({"encoder_dim": 700}, "multiple of head_dim"),
        ({"repa_layer": 12}, "repa_layer"),
        ({"position_table_size": 100}, "position_table_size"),
        ({"sampler": "heun"}, "sampler"),
        ({"codebook_size": 0}, "codebook_size"),
    ],
)
def test_invalid_configs_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        TOKENIZER_PRESETS["tokenizer_v1"].replace(**overrides)


def test_dict_round_trip_and_unknown_keys():
    cfg = TOKENIZER_PRESETS["demo"]
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg
    assert TokenizerConfig.from_dict({**cfg.to_dict(), "_class_name": "DARTokenizer"}) == cfg
    with pytest.raises(ValueError, match="unknown TokenizerConfig fields"):
        TokenizerConfig.from_dict({**cfg.to_dict(), "num_codes": 3})
    with pytest.raises(ValueError, match="unknown TokenizerConfig fields"):
        cfg.replace(num_codes=3)
