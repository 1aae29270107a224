"""Tests of llama_ar.official_keys: mapping the official GPT onto a stock Llama (sizes, every tensor placed, the
same maths as the official model, readable errors)."""

from __future__ import annotations

import pytest
import torch
from official_checkpoints import (
    CLASSES,
    CODEBOOK,
    FFN,
    HEADS,
    HIDDEN,
    LAYERS,
    official_gpt_state_dict,
    reference_gpt_logits,
)

from dar.convert import load_strict
from llama_ar import ARConfig, VocabLayout, build_ar_model, official_keys


@pytest.fixture
def layout():
    return VocabLayout(CODEBOOK, CLASSES)


@pytest.fixture
def ar_config():
    return ARConfig(
        hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN, num_tokens=16
    )


def test_infer_ar_preset_from_shapes():
    def meta_gpt(hidden, layers, ffn):
        with torch.device("meta"):
            sd = {
                "cls_embedding.embedding_table.weight": torch.empty(1001, hidden),
                "tok_embeddings.weight": torch.empty(16384, hidden),
                "norm.weight": torch.empty(hidden),
                "output.weight": torch.empty(16384, hidden),
            }
            for i in range(layers):
                sd[f"layers.{i}.feed_forward.w1.weight"] = torch.empty(ffn, hidden)
                sd[f"layers.{i}.attention.wqkv.weight"] = torch.empty(3 * hidden, hidden)
        return sd

    assert official_keys.infer_ar_preset(meta_gpt(1024, 24, 2816)) == "dar-l"
    assert official_keys.infer_ar_preset(meta_gpt(1280, 36, 3584)) == "dar-xl"
    assert official_keys.infer_ar_preset(meta_gpt(768, 12, 2048)) == "dar-b"
    custom = official_keys.infer_ar_preset(official_gpt_state_dict(), num_tokens=16)
    assert isinstance(custom, ARConfig)
    assert (custom.hidden_size, custom.num_layers, custom.num_heads, custom.intermediate_size) == (
        HIDDEN,
        LAYERS,
        HEADS,
        FFN,
    )
    assert custom.num_tokens == 16


def test_convert_places_every_tensor(layout, ar_config):
    sd = official_gpt_state_dict()
    llama_config = ar_config.to_llama_config(layout)
    out = official_keys.convert_ar_state_dict(sd, llama_config, layout)
    emb = out["model.embed_tokens.weight"]
    assert emb.shape == (layout.vocab_size, HIDDEN)
    assert torch.equal(emb[:CODEBOOK], sd["tok_embeddings.weight"])
    for i in (0, 3, CLASSES - 1):
        assert torch.equal(emb[layout.class_token(i)], sd["cls_embedding.embedding_table.weight"][i])
    assert torch.equal(emb[layout.null_token], sd["cls_embedding.embedding_table.weight"][CLASSES])
    assert torch.equal(out["lm_head.weight"][:CODEBOOK], sd["output.weight"])
    assert not out["lm_head.weight"][CODEBOOK:].any()
    head_order = list(range(0, 64, 2)) + list(range(1, 64, 2))
    for i in range(LAYERS):
        wqkv = sd[f"layers.{i}.attention.wqkv.weight"]
        for part, name in enumerate(("q", "k")):
            block = wqkv[part * HIDDEN : (part + 1) * HIDDEN]
            for h in range(HEADS):
                expected = block[h * 64 : (h + 1) * 64][head_order]
                got = out[f"model.layers.{i}.self_attn.{name}_proj.weight"][h * 64 : (h + 1) * 64]
                assert torch.equal(got, expected)
        assert torch.equal(out[f"model.layers.{i}.self_attn.v_proj.weight"], wqkv[2 * HIDDEN :])
        pairs = {"o_proj": "attention.wo", "gate_proj": "feed_forward.w1", "up_proj": "feed_forward.w3"}
        pairs |= {"down_proj": "feed_forward.w2"}
        for ours, theirs in pairs.items():
            group = "self_attn" if ours == "o_proj" else "mlp"
            assert torch.equal(
                out[f"model.layers.{i}.{group}.{ours}.weight"], sd[f"layers.{i}.{theirs}.weight"]
            )
        assert torch.equal(
            out[f"model.layers.{i}.input_layernorm.weight"], sd[f"layers.{i}.attention_norm.weight"]
        )
        assert torch.equal(
            out[f"model.layers.{i}.post_attention_layernorm.weight"], sd[f"layers.{i}.ffn_norm.weight"]
        )
    model = build_ar_model(ar_config, layout)
    assert sorted(out) == sorted(model.state_dict())


def test_converted_llama_matches_official_maths(layout, ar_config):
    sd = official_gpt_state_dict()
    model = build_ar_model(ar_config, layout).eval()
    load_strict(model, official_keys.convert_ar_state_dict(sd, model.config, layout), "AR model")
    classes = torch.tensor([3, CLASSES])  # a class and the null class
    codes = torch.randint(0, CODEBOOK, (2, 15))
    class_ids = torch.tensor([layout.class_token(3), layout.null_token])
    with torch.no_grad():
        ours = model(torch.cat([class_ids[:, None], codes], 1)).logits[..., :CODEBOOK]
        official = reference_gpt_logits(sd, classes, codes)
        # Without the row permutation the same weights give clearly different logits: the test can fail.
        unpermuted = dict(sd)
        for i in range(LAYERS):
            unpermuted[f"layers.{i}.attention.wqkv.weight"] = torch.cat(
                [
                    official_keys.interleaved_to_rotate_half(w, HEADS)
                    for w in sd[f"layers.{i}.attention.wqkv.weight"].split(HIDDEN)
                ]
            )
        wrong = reference_gpt_logits(unpermuted, classes, codes)
    assert official.std() > 0.5
    torch.testing.assert_close(ours, official)
    assert (wrong - official).abs().max() > 100 * (ours - official).abs().max() + 1e-3


def test_interleaved_to_rotate_half_is_a_row_permutation():
    weight = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(16, 3)
    out = official_keys.interleaved_to_rotate_half(weight, num_heads=2)
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(out, torch.cat([weight[:8][order], weight[8:][order]]))
    with pytest.raises(ValueError, match="heads"):
        official_keys.interleaved_to_rotate_half(weight, num_heads=3)


def test_convert_errors_list_what_is_wrong(layout, ar_config):
    llama_config = ar_config.to_llama_config(layout)
    sd = official_gpt_state_dict()
    broken = {
        k: v for k, v in sd.items() if k not in ("layers.1.ffn_norm.weight", "layers.0.attention.wo.weight")
    }
    broken["layers.0.attention.extra.weight"] = torch.zeros(3)
    with pytest.raises(
        ValueError, match=r"missing \['layers.0.attention.wo.weight', 'layers.1.ffn_norm.weight'\].*extra"
    ):
        official_keys.convert_ar_state_dict(broken, llama_config, layout)
    with pytest.raises(ValueError, match="num_classes=10"):
        official_keys.convert_ar_state_dict(
            sd, ar_config.to_llama_config(VocabLayout(CODEBOOK, 7)), VocabLayout(CODEBOOK, 7)
        )
    with pytest.raises(ValueError, match="num_hidden_layers: config 2 vs checkpoint 3"):
        official_keys.convert_ar_state_dict(official_gpt_state_dict(layers=3), llama_config, layout)
    foreign = {"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}
    with pytest.raises(ValueError, match="not an official D-AR GPT state dict"):
        official_keys.convert_ar_state_dict(foreign, llama_config, layout)
    model = build_ar_model(ar_config, layout)
    out = official_keys.convert_ar_state_dict(sd, llama_config, layout)
    out.pop("lm_head.weight")
    with pytest.raises(ValueError, match=r"missing \(1\): \['lm_head.weight'\]"):
        load_strict(model, out, "AR model")
