"""Contracts of llama_ar.config / llama_ar.model: official shapes, stock Llama, save/load round trip."""

import json

import pytest
import torch

from llama_ar import AR_PRESETS, ARConfig, VocabLayout, build_ar_model
from llama_ar.config import swiglu_hidden_size

IMAGENET = VocabLayout(codebook_size=16384, num_classes=1000)


def test_dar_l_decoder_layer_has_the_official_parameter_count():
    with torch.device("meta"):
        model = build_ar_model("dar-l", IMAGENET)
    for layer in model.model.layers:
        assert sum(p.numel() for p in layer.parameters()) == 12_847_104
    assert len(model.model.layers) == 24
    # Official GPT-L: 342,910,976 with a separate 1001-row class table and a 16384-row head; ours appends
    # the classes to the token table and keeps a full-vocabulary head (+1001·d).
    total = sum(p.numel() for p in model.parameters())
    assert total == 342_910_976 + 1001 * 1024 == AR_PRESETS["dar-l"].num_parameters(IMAGENET)


@pytest.mark.parametrize(
    "name, width, layers, heads, ffn",
    [
        ("dar-b", 768, 12, 12, 2048),
        ("dar-l", 1024, 24, 16, 2816),
        ("dar-xl", 1280, 36, 20, 3584),
        ("dar-xxl", 1536, 48, 24, 4096),
    ],
)
def test_paper_presets_match_official_shapes(name, width, layers, heads, ffn):
    config = AR_PRESETS[name]
    assert (config.hidden_size, config.num_layers, config.num_heads) == (width, layers, heads)
    assert config.intermediate_size == ffn == swiglu_hidden_size(width)
    assert config.head_dim == 64
    llama = config.to_llama_config(IMAGENET)
    assert llama.num_key_value_heads == llama.num_attention_heads  # no GQA
    assert llama.tie_word_embeddings is False
    assert llama.rms_norm_eps == 1e-5 and llama.rope_parameters["rope_theta"] == 10000.0
    assert llama.max_position_embeddings == config.num_tokens + 1
    for special in (llama.bos_token_id, llama.eos_token_id, llama.pad_token_id):
        assert special is None or not 0 <= special < IMAGENET.codebook_size


def test_small_presets_fit_their_budgets():
    demo_layout = VocabLayout(1024, 10)
    assert AR_PRESETS["demo"].num_parameters(demo_layout) * 4 < 9.5e6  # ≈ 8.7 MB fp32
    assert AR_PRESETS["tiny"].num_parameters(demo_layout) < AR_PRESETS["demo"].num_parameters(demo_layout)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden_size=100, num_layers=2, num_heads=3), "divisible"),
        (dict(hidden_size=64, num_layers=0, num_heads=2), "positive int"),
        (dict(hidden_size=64, num_layers=2, num_heads=2, token_dropout=1.0), r"\[0, 1\)"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ARConfig(**kwargs)


def test_build_gives_a_stock_llama_with_official_init(layout):
    from transformers import LlamaForCausalLM

    model = build_ar_model("tiny", layout)
    assert type(model) is LlamaForCausalLM
    assert model.lm_head.weight.shape == (layout.vocab_size, 64)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert torch.count_nonzero(model.lm_head.weight) == 0  # zero-init head, as official
    assert model.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ValueError, match="unknown AR preset"):
        build_ar_model("dar-m", layout)
    with pytest.raises(ValueError, match="unknown ARConfig fields.*not_a_field"):
        build_ar_model("tiny", layout, not_a_field=1)


def test_save_and_auto_load_round_trip(tiny_model, layout, tmp_path):
    from transformers import AutoModelForCausalLM

    tiny_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["dar_layout"] == layout.to_dict()
    assert "auto_map" not in saved  # no custom code needed to load

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded).__module__.startswith("transformers.models.llama")
    recovered = VocabLayout.from_config(loaded.config)
    assert recovered == layout and recovered.id2label == layout.id2label

    ids = layout.build_inputs(layout.class_tokens([1, 3]), torch.randint(0, layout.codebook_size, (2, 9)))
    with torch.no_grad():
        expected = tiny_model(ids).logits
        actual = loaded(ids).logits
    torch.testing.assert_close(actual, expected)
