"""Official D-AR checkpoints in miniature, for the converter tests: random tensors with the official key names
and shapes (reference §6.2, §6.3), and a small re-statement of the official GPT maths (interleaved-pair 1-D RoPE
with the class token at position 0, RMSNorm, SwiGLU) that validates the q/k row permutation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def save(obj, path):
    torch.save(obj, path)
    return path


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
    "encoder_patch_size": 4,
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "query_low_rank": True,
    "encoder_dim": 64,
    "decoder_dim": 64,
    "vq_dim": 8,
    "vq_codebook_size": CODEBOOK,
    "num_denoising_steps": 4,
    "num_query_groups": 4,
    "num_all_queries": 16,
    "queries_per_step": 4,
    "vq_enable": True,
    "sampling_resolution": 16,
    "diff_decoder": {
        "in_dim": 3,
        "out_dim": 3,
        "dim": 64,
        "cond_dim": 64,
        "patch_size": 4,
        "depth": 2,
        "data_std": 0.6,
        "time_shift": 2,
        "mlp_head": False,
        "share_time_encoding": False,
        "repa_layer": 99,
    },
}


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


def converted_tokenizer(official_sd, config):
    """A ``DARTokenizer`` of ``config`` holding official tokenizer weights, converted and loaded strictly."""
    from dar.convert import load_strict
    from dar.convert.tokenizer_config import convert_tokenizer_state_dict
    from tokenizer import DARTokenizer

    tokenizer = DARTokenizer.from_config(config)
    load_strict(tokenizer, convert_tokenizer_state_dict(official_sd, config), "tokenizer")
    return tokenizer.eval()
