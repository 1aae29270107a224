"""Rename table between the official D-AR GPT checkpoint (LlamaGen style) and a stock ``LlamaForCausalLM``.

Describes the official ``D-AR-{L,XL}-360K.pt`` state dicts of reference §6.3 (symmetric to
``tokenizer/official_keys.py``): the fused ``wqkv`` is split, the q/k rows of every head are permuted from the
official interleaved-pair RoPE to the rotate-half RoPE of ``transformers`` (:func:`interleaved_to_rotate_half`),
and the separate class table (classes + one null row) is appended to the code table in :class:`VocabLayout`
order. :func:`infer_ar_preset` reads the model size from the shapes. Reading the ``.pt`` files is
``dar.convert``'s job; this module only maps tensors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from .config import AR_PRESETS, ARConfig
from .layout import VocabLayout

__all__ = [
    "OFFICIAL_HEAD_DIM",
    "convert_ar_state_dict",
    "infer_ar_preset",
    "interleaved_to_rotate_half",
    "official_gpt_shapes",
]

logger = logging.getLogger(__name__)

OFFICIAL_HEAD_DIM = 64  # every official GPT uses 64-d heads (reference §4.1); heads = hidden // 64
_GPT_LAYER = re.compile(r"^layers\.(\d+)\.")


def official_gpt_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Read the sizes of an official GPT from its state dict.

    Returns:
        dict with ``hidden_size``, ``num_layers``, ``num_heads`` (hidden // 64), ``intermediate_size``,
        ``codebook_size`` and ``num_class_rows`` (classes + 1 null row).

    Raises:
        ValueError: when the dict is not an official GPT (names the missing keys).
    """
    required = (
        "tok_embeddings.weight",
        "cls_embedding.embedding_table.weight",
        "norm.weight",
        "output.weight",
    )
    missing = [key for key in required if key not in state_dict]
    layers = {int(m.group(1)) for key in state_dict if (m := _GPT_LAYER.match(key))}
    if missing or not layers:
        raise ValueError(
            f"not an official D-AR GPT state dict: missing {missing or ['layers.*']} (it has {len(state_dict)} "
            f"keys, e.g. {sorted(state_dict)[:5]}); pass the AR checkpoint (D-AR-L-360K.pt / D-AR-XL-360K.pt)."
        )
    codebook_size, hidden = state_dict["tok_embeddings.weight"].shape
    if hidden % OFFICIAL_HEAD_DIM:
        raise ValueError(
            f"hidden size {hidden} is not a multiple of the official head dim {OFFICIAL_HEAD_DIM}."
        )
    w1 = state_dict.get("layers.0.feed_forward.w1.weight")
    if w1 is None:
        raise ValueError("official GPT state dict lacks layers.0.feed_forward.w1.weight.")
    wqkv = state_dict.get("layers.0.attention.wqkv.weight")
    if wqkv is not None and wqkv.shape[0] != 3 * hidden:
        raise ValueError(
            f"wqkv has {wqkv.shape[0]} rows, expected 3·{hidden}: grouped-query checkpoints are not supported."
        )
    return {
        "hidden_size": int(hidden),
        "num_layers": max(layers) + 1,
        "num_heads": int(hidden) // OFFICIAL_HEAD_DIM,
        "intermediate_size": int(w1.shape[0]),
        "codebook_size": int(codebook_size),
        "num_class_rows": int(state_dict["cls_embedding.embedding_table.weight"].shape[0]),
    }


def infer_ar_preset(
    state_dict: Mapping[str, torch.Tensor], *, num_tokens: int | None = None
) -> str | ARConfig:
    """Name the ``llama_ar`` preset matching an official GPT, or build an ``ARConfig`` for other sizes.

    Args:
        state_dict: an official GPT state dict (:func:`load_official_state_dict`).
        num_tokens: codes per image, used only for a custom config (default: ``ARConfig``'s, 256).

    Returns:
        ``"dar-b"``, ``"dar-l"``, ``"dar-xl"`` or ``"dar-xxl"`` when (hidden, layers, heads, FFN) match that
        preset, else an :class:`ARConfig` with the checkpoint's sizes and 64-d heads.
    """
    shapes = official_gpt_shapes(state_dict)
    sizes = {k: shapes[k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size")}
    for name, preset in AR_PRESETS.items():
        if name.startswith("dar-") and all(getattr(preset, k) == v for k, v in sizes.items()):
            return name
    logger.info("official GPT of nonstandard size %s: building a custom ARConfig", sizes)
    return ARConfig(**sizes, **({} if num_tokens is None else {"num_tokens": num_tokens}))


def interleaved_to_rotate_half(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder q or k projection rows from interleaved-pair RoPE to rotate-half RoPE.

    The official GPT rotates dims (2j, 2j+1) of each head by angle ω_j; ``transformers``' Llama rotates dims
    (j, j + D/2). Taking rows 0, 2, …, D−2 then 1, 3, …, D−1 of every head makes the two rotations act on the
    same pairs, so attention scores, and hence the whole model, are unchanged.

    Args:
        weight: (num_heads·D, hidden) rows head-major, D the head dim.
        num_heads: number of heads.

    Returns:
        The permuted (num_heads·D, hidden) tensor.
    """
    rows, hidden = weight.shape
    head_dim = rows // num_heads
    if head_dim * num_heads != rows or head_dim % 2:
        raise ValueError(f"{rows} rows do not split into {num_heads} heads of even size.")
    per_head = weight.reshape(num_heads, head_dim // 2, 2, hidden)  # (H, D/2, pair, hidden)
    return per_head.transpose(1, 2).reshape(rows, hidden)


def convert_ar_state_dict(
    official_sd: Mapping[str, torch.Tensor], llama_config: Any, layout: VocabLayout
) -> dict[str, torch.Tensor]:
    """Map an official GPT state dict onto ``LlamaForCausalLM`` parameter names.

    Args:
        official_sd: output of :func:`load_official_state_dict` for a GPT checkpoint.
        llama_config: the target ``LlamaConfig`` (``hidden_size``, ``num_hidden_layers``,
            ``num_attention_heads``, ``intermediate_size``, ``vocab_size``).
        layout: the target ``llama_ar.VocabLayout`` (codes, then classes, then the null class).

    Returns:
        ``{hf_name: tensor}``. ``model.embed_tokens.weight`` = [code table; class rows 0…C−1; null row C];
        ``lm_head.weight`` rows for non-code ids are zero (those logits are masked at sampling).

    Raises:
        ValueError: on any size mismatch, unmapped official key or missing target key (all listed).
    """
    shapes = official_gpt_shapes(official_sd)
    hidden, num_layers, num_heads = shapes["hidden_size"], shapes["num_layers"], shapes["num_heads"]
    expected = {
        "hidden_size": hidden,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": shapes["intermediate_size"],
        "vocab_size": layout.vocab_size,
    }
    wrong = {
        k: (getattr(llama_config, k, None), v)
        for k, v in expected.items()
        if getattr(llama_config, k, None) != v
    }
    kv_heads = getattr(llama_config, "num_key_value_heads", None) or num_heads
    if kv_heads != num_heads:
        wrong["num_key_value_heads"] = (kv_heads, num_heads)
    if wrong:
        detail = ", ".join(f"{k}: config {c} vs checkpoint {v}" for k, (c, v) in wrong.items())
        raise ValueError(
            f"the target Llama config does not match the official GPT ({detail}); use infer_ar_preset."
        )
    if shapes["codebook_size"] != layout.codebook_size:
        raise ValueError(
            f"the GPT predicts {shapes['codebook_size']} codes but the layout has codebook_size={layout.codebook_size}."
        )
    if shapes["num_class_rows"] != layout.num_classes + 1:
        raise ValueError(
            f"the GPT class table has {shapes['num_class_rows']} rows (classes + 1 null row) but the layout has "
            f"num_classes={layout.num_classes}; pass num_classes={shapes['num_class_rows'] - 1}."
        )

    per_layer = ("attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
    per_layer += ("attention_norm", "ffn_norm")
    expected_keys = {
        "cls_embedding.embedding_table.weight",
        "tok_embeddings.weight",
        "norm.weight",
        "output.weight",
    }
    expected_keys |= {f"layers.{i}.{name}.weight" for i in range(num_layers) for name in per_layer}
    missing, unmapped = sorted(expected_keys - set(official_sd)), sorted(set(official_sd) - expected_keys)
    if missing or unmapped:
        raise ValueError(
            f"official GPT state dict does not match a {num_layers}-layer GPT: missing {missing[:20]} "
            f"({len(missing)}), keys with no place in a Llama model {unmapped[:20]} ({len(unmapped)})."
        )
    sd = official_sd
    class_table = sd["cls_embedding.embedding_table.weight"]
    embed = class_table.new_empty(layout.vocab_size, hidden)
    embed[: layout.codebook_size] = sd["tok_embeddings.weight"]
    embed[layout.class_tokens(list(range(layout.num_classes)))] = class_table[: layout.num_classes]
    embed[layout.null_token] = class_table[layout.num_classes]
    head = sd["output.weight"]  # non-code rows stay zero: those logits are masked at sampling
    lm_head = torch.cat([head, head.new_zeros(layout.vocab_size - layout.codebook_size, hidden)], dim=0)
    out = {
        "model.embed_tokens.weight": embed,
        "model.norm.weight": sd["norm.weight"],
        "lm_head.weight": lm_head,
    }
    for i in range(num_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        q, k, v = sd[src + "attention.wqkv.weight"].split(hidden, dim=0)  # rows q | k | v, each head-major
        out[dst + "self_attn.q_proj.weight"] = interleaved_to_rotate_half(q, num_heads)
        out[dst + "self_attn.k_proj.weight"] = interleaved_to_rotate_half(k, num_heads)
        out[dst + "self_attn.v_proj.weight"] = v
        out[dst + "self_attn.o_proj.weight"] = sd[src + "attention.wo.weight"]
        out[dst + "mlp.gate_proj.weight"] = sd[src + "feed_forward.w1.weight"]
        out[dst + "mlp.up_proj.weight"] = sd[src + "feed_forward.w3.weight"]
        out[dst + "mlp.down_proj.weight"] = sd[src + "feed_forward.w2.weight"]
        out[dst + "input_layernorm.weight"] = sd[src + "attention_norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[src + "ffn_norm.weight"]
    return {key: value.contiguous() for key, value in out.items()}
