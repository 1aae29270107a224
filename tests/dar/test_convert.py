"""Tests for dar.convert: loading official checkpoint files and mapping the official GPT onto a stock Llama.

The official state dicts here are random tensors with the official key names and shapes (reference §6.3),
written in every file form the converter accepts. The numerical test compares the converted Llama with a
small re-statement of the official GPT maths (interleaved-pair 1-D RoPE with the class token at position 0,
RMSNorm, SwiGLU), which is what validates the q/k row permutation.
"""

from __future__ import annotations

import argparse
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from dar import convert, official_weights
from llama_ar import ARConfig, VocabLayout, build_ar_model

HIDDEN, LAYERS, HEADS, FFN, CODEBOOK, CLASSES = 128, 2, 2, 352, 64, 10


def official_gpt_state_dict(
    seed: int = 0, layers: int = LAYERS, scale: float = 0.3
) -> dict[str, torch.Tensor]:
    """Random official-GPT tensors (head dim 64); weights large enough that attention is far from uniform."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=scale):
        return torch.randn(*shape, generator=g) * std

    sd = {
        "cls_embedding.embedding_table.weight": rand(CLASSES + 1, HIDDEN, std=1.0),
        "tok_embeddings.weight": rand(CODEBOOK, HIDDEN, std=1.0),
        "norm.weight": 1 + rand(HIDDEN, std=0.1),
        "output.weight": rand(CODEBOOK, HIDDEN),
    }
    for i in range(layers):
        p = f"layers.{i}."
        sd[p + "attention.wqkv.weight"] = rand(3 * HIDDEN, HIDDEN, std=1 / math.sqrt(HIDDEN) * 2)
        sd[p + "attention.wo.weight"] = rand(HIDDEN, HIDDEN, std=1 / math.sqrt(HIDDEN))
        sd[p + "feed_forward.w1.weight"] = rand(FFN, HIDDEN, std=1 / math.sqrt(HIDDEN))
        sd[p + "feed_forward.w3.weight"] = rand(FFN, HIDDEN, std=1 / math.sqrt(HIDDEN))
        sd[p + "feed_forward.w2.weight"] = rand(HIDDEN, FFN, std=1 / math.sqrt(FFN))
        sd[p + "attention_norm.weight"] = 1 + rand(HIDDEN, std=0.1)
        sd[p + "ffn_norm.weight"] = 1 + rand(HIDDEN, std=0.1)
    return sd


def reference_gpt_logits(sd, class_ids, codes, num_heads=HEADS, eps=1e-5):
    """The official GPT forward pass (reference §4.1), restated: returns (B, 1 + L, codebook) logits."""
    x = torch.cat(
        [sd["cls_embedding.embedding_table.weight"][class_ids][:, None], sd["tok_embeddings.weight"][codes]],
        1,
    )
    batch, length, dim = x.shape
    head_dim = dim // num_heads
    freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(length).float(), freqs)  # class token at position 0
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(t):  # rotate adjacent pairs (2j, 2j+1) by angle position·ω_j
        a, b = t.reshape(batch, length, num_heads, head_dim // 2, 2).unbind(-1)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(
            batch, length, num_heads, head_dim
        )

    layers = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    for i in range(layers):
        p = f"layers.{i}."
        q, k, v = (rms(x, sd[p + "attention_norm.weight"]) @ sd[p + "attention.wqkv.weight"].T).split(dim, -1)
        q, k = (
            rope(q.view(batch, length, num_heads, head_dim)),
            rope(k.view(batch, length, num_heads, head_dim)),
        )
        v = v.view(batch, length, num_heads, head_dim)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + attn.transpose(1, 2).reshape(batch, length, dim) @ sd[p + "attention.wo.weight"].T
        h = rms(x, sd[p + "ffn_norm.weight"])
        gate, up = h @ sd[p + "feed_forward.w1.weight"].T, h @ sd[p + "feed_forward.w3.weight"].T
        x = x + (F.silu(gate) * up) @ sd[p + "feed_forward.w2.weight"].T
    return rms(x, sd["norm.weight"]) @ sd["output.weight"].T


@pytest.fixture
def layout():
    return VocabLayout(CODEBOOK, CLASSES)


@pytest.fixture
def ar_config():
    return ARConfig(
        hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN, num_tokens=16
    )


def save(obj, path):
    torch.save(obj, path)
    return path


# ----------------------------------------------------------------------------------------------- loading
def test_load_bare_and_prefixed_and_kv_cache(tmp_path):
    sd = official_gpt_state_dict()
    noisy = {f"_orig_mod.{k}": v for k, v in sd.items()}
    noisy["_orig_mod.layers.0.attention.kv_cache.k_cache"] = torch.zeros(2, 2, 8, 64)
    noisy["_orig_mod.layers.0.attention.kv_cache.v_cache"] = torch.zeros(2, 2, 8, 64)
    for obj in (sd, noisy, {f"module.{k}": v for k, v in sd.items()}):
        loaded = official_weights.load_official_state_dict(save(obj, tmp_path / "ckpt.pt"))
        assert sorted(loaded) == sorted(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_load_prefers_ema_over_model(tmp_path, caplog):
    ema, raw = official_gpt_state_dict(seed=1), official_gpt_state_dict(seed=2)
    with caplog.at_level("INFO", logger="dar.official_weights"):
        loaded = official_weights.load_official_state_dict(
            save({"model": raw, "ema": ema, "steps": 5}, tmp_path / "c.pt")
        )
    assert torch.equal(loaded["norm.weight"], ema["norm.weight"])
    assert "['ema']" in caplog.text
    loaded = official_weights.load_official_state_dict(
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
    loaded = official_weights.load_official_state_dict(path)
    assert torch.equal(loaded["output.weight"], sd["output.weight"])


def test_load_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    sd = official_gpt_state_dict()
    save_file({f"_orig_mod.{k}": v for k, v in sd.items()}, str(tmp_path / "gpt.safetensors"))
    loaded = official_weights.load_official_state_dict(tmp_path / "gpt.safetensors")
    assert sorted(loaded) == sorted(sd) and torch.equal(loaded["output.weight"], sd["output.weight"])


def test_load_legacy_non_zip_file(tmp_path):
    sd = official_gpt_state_dict()
    path = tmp_path / "legacy.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert torch.equal(official_weights.load_official_state_dict(path)["norm.weight"], sd["norm.weight"])


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
        official_weights.load_official_state_dict(path)


def test_load_rejects_truncated_file(tmp_path):
    path = save(official_gpt_state_dict(), tmp_path / "full.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be read as a PyTorch checkpoint.*zip archive"):
        official_weights.load_official_state_dict(tmp_path / "cut.pt")


def test_missing_path_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="No such checkpoint file"):
        official_weights.load_official_state_dict(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="names no file"):
        official_weights.load_official_state_dict("showlab/D-AR")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time: patch the live value too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        official_weights.load_official_state_dict("showlab/D-AR/D-AR-L-360K.pt")


# -------------------------------------------------------------------------------------------- AR mapping
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

    assert official_weights.infer_ar_preset(meta_gpt(1024, 24, 2816)) == "dar-l"
    assert official_weights.infer_ar_preset(meta_gpt(1280, 36, 3584)) == "dar-xl"
    assert official_weights.infer_ar_preset(meta_gpt(768, 12, 2048)) == "dar-b"
    custom = official_weights.infer_ar_preset(official_gpt_state_dict(), num_tokens=16)
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
    out = official_weights.convert_ar_state_dict(sd, llama_config, layout)
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
    official_weights.load_strict(
        model, official_weights.convert_ar_state_dict(sd, model.config, layout), "AR model"
    )
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
                    official_weights.interleaved_to_rotate_half(w, HEADS)
                    for w in sd[f"layers.{i}.attention.wqkv.weight"].split(HIDDEN)
                ]
            )
        wrong = reference_gpt_logits(unpermuted, classes, codes)
    assert official.std() > 0.5
    torch.testing.assert_close(ours, official, atol=1e-4, rtol=1e-4)
    assert (wrong - official).abs().max() > 100 * (ours - official).abs().max() + 1e-3


def test_interleaved_to_rotate_half_is_a_row_permutation():
    weight = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(16, 3)
    out = official_weights.interleaved_to_rotate_half(weight, num_heads=2)
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(out, torch.cat([weight[:8][order], weight[8:][order]]))
    with pytest.raises(ValueError, match="heads"):
        official_weights.interleaved_to_rotate_half(weight, num_heads=3)


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
        official_weights.convert_ar_state_dict(broken, llama_config, layout)
    with pytest.raises(ValueError, match="num_classes=10"):
        official_weights.convert_ar_state_dict(
            sd, ar_config.to_llama_config(VocabLayout(CODEBOOK, 7)), VocabLayout(CODEBOOK, 7)
        )
    with pytest.raises(ValueError, match="num_hidden_layers: config 2 vs checkpoint 3"):
        official_weights.convert_ar_state_dict(official_gpt_state_dict(layers=3), llama_config, layout)
    foreign = {"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}
    with pytest.raises(ValueError, match="not an official D-AR GPT state dict"):
        official_weights.convert_ar_state_dict(foreign, llama_config, layout)
    model = build_ar_model(ar_config, layout)
    out = official_weights.convert_ar_state_dict(sd, llama_config, layout)
    out.pop("lm_head.weight")
    with pytest.raises(ValueError, match=r"missing \['lm_head.weight'\]"):
        official_weights.load_strict(model, out, "AR model")


# ------------------------------------------------------------------------------------------- tokenizer
OFFICIAL_TOKENIZER_V1_YAML = """
model:
  encoder_patch_size: 16
  num_encoder_layers: 8
  num_decoder_layers: 8
  query_low_rank: true
  encoder_dim: 768
  decoder_dim: 768
  vq_dim: 8
  vq_codebook_size: 16384
  num_denoising_steps: 8
  num_query_groups: 8
  num_all_queries: 256
  queries_per_step: 32
  vq_enable: true
  diff_decoder:
    in_dim: 3
    out_dim: 3
    dim: 768
    cond_dim: 768
    patch_size: 8
    depth: 12
    data_std: 0.6
    time_shift: 2
    mlp_head: false
    share_time_encoding: false
"""
SMALL_OFFICIAL_TOKENIZER = {
    "encoder_patch_size": 4, "num_encoder_layers": 1, "num_decoder_layers": 1, "query_low_rank": True,
    "encoder_dim": 64, "decoder_dim": 64, "vq_dim": 8, "vq_codebook_size": CODEBOOK, "num_denoising_steps": 4,
    "num_query_groups": 4, "num_all_queries": 16, "queries_per_step": 4, "vq_enable": True, "sampling_resolution": 16,
    "diff_decoder": {"in_dim": 3, "out_dim": 3, "dim": 64, "cond_dim": 64, "patch_size": 4, "depth": 2,
                     "data_std": 0.6, "time_shift": 2, "mlp_head": False, "share_time_encoding": False,
                     "repa_layer": 99},
}  # fmt: skip


def official_tokenizer_state_dict(cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the official tokenizer key names and shapes (reference §6.2) for config ``cfg``."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def add(name, *shape):
        sd[name] = torch.randn(*shape, generator=g)

    def attention(prefix, d):
        for proj in ("q", "k", "v", "proj"):
            add(f"{prefix}.{proj}.weight", d, d), add(f"{prefix}.{proj}.bias", d)
        for norm in ("q_norm", "k_norm"):
            add(f"{prefix}.{norm}.weight", 64), add(f"{prefix}.{norm}.bias", 64)

    def mlp(prefix, d):
        add(f"{prefix}.fc1.weight", 4 * d, d), add(f"{prefix}.fc1.bias", 4 * d)
        add(f"{prefix}.fc2.weight", d, 4 * d), add(f"{prefix}.fc2.bias", d)

    for part, count, d in (
        ("encoder", cfg["num_encoder_layers"], cfg["encoder_dim"]),
        ("decoder", cfg["num_decoder_layers"], cfg["decoder_dim"]),
    ):
        for i in range(count):
            p = f"{part}_layers.{i}"
            add(f"{p}.gate1", d), add(f"{p}.gate2", d)
            attention(f"{p}.attention", d), mlp(f"{p}.mlp", d)
            for norm in ("norm1", "norm2"):
                add(f"{p}.{norm}.weight", d), add(f"{p}.{norm}.bias", d)
    e, c, vq, patch = cfg["encoder_dim"], cfg["decoder_dim"], cfg["vq_dim"], cfg["encoder_patch_size"]
    add("patchify.weight", e, 3, patch, patch), add("patchify.bias", e)
    add("quant_in_conv.weight", vq, e, 1, 1), add("quant_out_conv.weight", c, vq, 1, 1)
    sd["quantize.codebook_used"] = torch.zeros(65536)
    add("quantize.embedding.weight", cfg["vq_codebook_size"], vq)
    sd["quantize.embedding.weight"] = F.normalize(sd["quantize.embedding.weight"], dim=-1)
    add("query_embedding.weight", 1024, 8), add("query_linear.weight", e, 8), add("query_linear.bias", e)
    add("decoder_embedding.weight", 1024, c)
    dd, dec = cfg["diff_decoder"]["dim"], cfg["diff_decoder"]
    pixels = 3 * dec["patch_size"] ** 2
    net = "diff_decoder.net"
    add(f"{net}.cond_mlp.weight", dd, c), add(f"{net}.cond_mlp.bias", dd)
    add(f"{net}.conv_in.weight", dd, pixels, 1, 1), add(f"{net}.conv_in.bias", dd)
    add(f"{net}.conv_out.weight", pixels, dd, 1, 1), add(f"{net}.conv_out.bias", pixels)
    for j in range(dec["depth"]):
        b = f"{net}.blocks.{j}"
        attention(f"{b}.attention", dd), attention(f"{b}.cross_attn", dd), mlp(f"{b}.mlp", dd)
        add(f"{b}.adaLN_modulation.1.weight", 6 * dd, dd), add(f"{b}.adaLN_modulation.1.bias", 6 * dd)
        for seq in ("time_embed.mlp.0", "time_embed.mlp.2", "cond_embed.0", "cond_embed.2"):
            add(f"{b}.{seq}.weight", dd, dd), add(f"{b}.{seq}.bias", dd)
    for idx, (rows, cols) in enumerate(((2048, dd), (2048, 2048), (768, 2048))):
        add(f"{net}.repa_out.{2 * idx}.weight", rows, cols), add(f"{net}.repa_out.{2 * idx}.bias", rows)
    return sd


def test_official_yaml_gives_the_tokenizer_v1_preset(tmp_path):
    from tokenizer import TOKENIZER_PRESETS

    path = tmp_path / "tokenizer_v1.yaml"
    path.write_text(OFFICIAL_TOKENIZER_V1_YAML)
    assert convert.tokenizer_config_from_official_yaml(path) == TOKENIZER_PRESETS["tokenizer_v1"]
    assert convert.resolve_tokenizer_config(str(path)) == TOKENIZER_PRESETS["tokenizer_v1"]
    assert convert.resolve_tokenizer_config("tokenizer_v1") is TOKENIZER_PRESETS["tokenizer_v1"]
    small = convert.tokenizer_config_from_official(SMALL_OFFICIAL_TOKENIZER)
    assert (small.image_size, small.num_tokens, small.tokens_per_step, small.repa_layer) == (16, 16, 4, None)
    path.write_text(OFFICIAL_TOKENIZER_V1_YAML.replace("mlp_head: false", "mlp_head: true\n    lpips: 1"))
    with pytest.raises(ValueError, match="diff_decoder.lpips"):
        convert.tokenizer_config_from_official_yaml(path)
    path.write_text(OFFICIAL_TOKENIZER_V1_YAML.replace("mlp_head: false", "mlp_head: true"))
    with pytest.raises(ValueError, match="mlp_head=true"):
        convert.tokenizer_config_from_official_yaml(path)
    with pytest.raises(ValueError, match="neither a preset"):
        convert.resolve_tokenizer_config("tokenizer_v9")


def test_tokenizer_conversion_errors(tmp_path):
    pytest.importorskip("tokenizer.official_keys", reason="tokenizer.official_keys not written yet")
    config = convert.tokenizer_config_from_official(SMALL_OFFICIAL_TOKENIZER)
    with pytest.raises(ValueError, match="looks like a GPT checkpoint"):
        convert.convert_tokenizer(official_gpt_state_dict(), config)
    broken = official_tokenizer_state_dict(SMALL_OFFICIAL_TOKENIZER)
    del broken["decoder_layers.0.mlp.fc2.bias"]
    with pytest.raises(ValueError, match="conditioning.layers.0.mlp.fc2.bias"):
        convert.convert_tokenizer(broken, config)
    # A failing conversion writes nothing: no output folder, no temporary folder.
    torch.save(official_gpt_state_dict(), tmp_path / "gpt.pt")
    with pytest.raises(ValueError, match="looks like a GPT checkpoint"):
        convert.convert_official(
            tmp_path / "gpt.pt", tmp_path / "gpt.pt", tmp_path / "out", num_classes=CLASSES
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt.pt"]


def _tensor_index(state_dict):
    index = {}
    for value in state_dict.values():
        index.setdefault(value.numel(), []).append(value.detach().flatten().float())
    return index


def test_convert_official_end_to_end(tmp_path, layout):
    """Official-format files -> `dar convert` -> a folder whose models hold every official tensor."""
    pytest.importorskip("tokenizer.official_keys", reason="tokenizer.official_keys not written yet")
    from transformers import AutoModelForCausalLM

    from dar.pipeline import DARPipeline
    from tokenizer import DARTokenizer

    tok_sd, gpt_sd = official_tokenizer_state_dict(SMALL_OFFICIAL_TOKENIZER), official_gpt_state_dict()
    torch.save(tok_sd, tmp_path / "tokenizer.pt")
    torch.save({f"_orig_mod.{k}": v for k, v in gpt_sd.items()}, tmp_path / "gpt.pt")
    yaml_path = tmp_path / "small.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump({"model": SMALL_OFFICIAL_TOKENIZER}))
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    parser = convert.add_convert_arguments(argparse.ArgumentParser())
    argv = [
        "--tokenizer",
        str(tmp_path / "tokenizer.pt"),
        "--ar",
        str(tmp_path / "gpt.pt"),
        "--out",
        str(out),
    ]
    argv += ["--tokenizer-config", str(yaml_path), "--class-names", str(names), "--num-classes", str(CLASSES)]
    assert convert.run_convert(parser.parse_args([*argv, "--overwrite"])) == out
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dirs left

    ar = AutoModelForCausalLM.from_pretrained(out / "ar_model").eval()
    loaded_layout = VocabLayout.from_config(ar.config)
    assert loaded_layout == layout and loaded_layout.id2label[3] == "class 3"
    codes = torch.randint(0, CODEBOOK, (1, 15))
    with torch.no_grad():
        logits = ar(torch.cat([torch.tensor([[layout.class_token(3)]]), codes], 1)).logits[..., :CODEBOOK]
    torch.testing.assert_close(
        logits, reference_gpt_logits(gpt_sd, torch.tensor([3]), codes), atol=1e-4, rtol=1e-4
    )

    pipe = DARPipeline.from_pretrained(out)
    assert pipe.layout == layout and pipe.id2label[CLASSES - 1] == f"class {CLASSES - 1}"
    tokenizer = pipe.tokenizer
    assert isinstance(tokenizer, DARTokenizer) and tokenizer.config.num_tokens == 16
    index = _tensor_index(tokenizer.state_dict())
    skipped = (
        "quantize.codebook_used",
        "diff_decoder.net.repa_out.",
    )  # statistics / unused head (repa_layer 99)
    lost = [
        name
        for name, value in tok_sd.items()
        if not name.startswith(skipped)
        and not any(
            torch.allclose(value.flatten(), other, atol=1e-6) for other in index.get(value.numel(), [])
        )
    ]
    assert lost == []
    # The tokenizer package's inverse mapping names exactly the official keys of reference §6.2.
    from tokenizer.official_keys import ours_to_official

    back = ours_to_official(tokenizer.state_dict(), tokenizer.config)
    assert sorted(back) == sorted(k for k in tok_sd if not k.startswith("diff_decoder.net.repa_out."))
    assert all(back[k].shape == tok_sd[k].shape for k in back)


# ------------------------------------------------------------------------------------- assembly and CLI
def test_cli_arguments_and_class_names(tmp_path):
    parser = convert.add_convert_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--tokenizer", "t.pt", "--ar", "a.pt", "--out", "o", "--num-classes", "3", "--overwrite"]
    )
    assert (args.tokenizer, args.ar, args.out, args.num_classes, args.overwrite) == (
        "t.pt",
        "a.pt",
        "o",
        3,
        True,
    )
    assert args.tokenizer_config == "tokenizer_v1" and args.ar_preset is None and args.class_names is None
    names = tmp_path / "names.txt"
    names.write_text("tench, Tinca tinca\ngoldfish\n\n")
    assert convert.read_class_names(names) == ["tench, Tinca tinca", "goldfish"]
    names.write_text("a\n\nb\n")
    with pytest.raises(ValueError, match="blank lines"):
        convert.read_class_names(names)


def test_convert_official_refuses_non_empty_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert.convert_official(tmp_path / "t.pt", tmp_path / "a.pt", out)
    assert (out / "keep.txt").read_text() == "precious"
