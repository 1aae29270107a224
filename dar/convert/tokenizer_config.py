"""The official tokenizer's configuration (``configs/tokenizer_v1.yaml``) and weights as our ``TokenizerConfig``
and ``DARTokenizer`` state dict (reference §2.1, §6.2). The key table itself is ``tokenizer.official_keys``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "OFFICIAL_CONSTANTS",
    "convert_tokenizer_state_dict",
    "resolve_tokenizer_config",
    "tokenizer_config_from_official",
    "tokenizer_config_from_official_yaml",
]

# What the official code hard-codes instead of reading from its config (reference §2.1): 64-d heads, MLP ratio 4,
# query rank 8, 1024-row position tables, a 2048 → 768 REPA head on at most a 16×16 grid.
OFFICIAL_CONSTANTS = {
    "head_dim": 64,
    "mlp_ratio": 4,
    "query_rank": 8,
    "position_table_size": 1024,
    "repa_hidden_dim": 2048,
    "repa_dim": 768,
    "max_repa_grid": 16,
}

_OFFICIAL_MODEL_KEYS = set(
    "encoder_patch_size num_encoder_layers num_decoder_layers query_low_rank encoder_dim decoder_dim vq_dim "
    "vq_codebook_size num_denoising_steps num_query_groups num_all_queries queries_per_step vq_enable "
    "rope_base_len sampling_resolution output_resolution diff_decoder".split()
)
_OFFICIAL_DECODER_KEYS = set(
    "in_dim dim cond_dim patch_size depth data_std time_shift mlp_head share_time_encoding repa_layer "
    "rope_base_len out_dim cfg grad_checkpointing".split()  # the last three are unused or training-only
)


def tokenizer_config_from_official(model: Mapping[str, Any]) -> Any:
    """Map an official tokenizer ``model:`` dict (with its ``diff_decoder:`` block) onto a ``TokenizerConfig``.

    Official defaults apply to absent keys (``rope_base_len`` 10000, ``sampling_resolution`` 256,
    ``repa_layer`` 8, ``query_low_rank`` true); constants the official code hard-codes become fields (head dim
    64, MLP ratio 4, query rank 8, 1024-row position tables, REPA head 2048 → 768 on a 16×16 grid).

    Raises:
        ValueError: an unknown key, or an official option our tokenizer does not implement (named).
    """
    from tokenizer import TokenizerConfig

    top, dec = model, model.get("diff_decoder") or {}
    unknown = sorted(set(top) - _OFFICIAL_MODEL_KEYS) + [
        f"diff_decoder.{k}" for k in sorted(set(dec) - _OFFICIAL_DECODER_KEYS)
    ]
    if unknown:
        raise ValueError(f"unknown official tokenizer settings {unknown}.")
    groups, tokens, rope = top["num_query_groups"], top["num_all_queries"], top.get("rope_base_len", 10000)
    unsupported = [
        ("vq_enable=false (no codes)", not top.get("vq_enable", True)),
        ("query_low_rank=false", not top.get("query_low_rank", True)),
        ("output_resolution != 0 (a final resize)", top.get("output_resolution", 0) != 0),
        ("num_denoising_steps != num_query_groups", top["num_denoising_steps"] != groups),
        (
            "queries_per_step != num_all_queries / num_query_groups",
            top.get("queries_per_step", tokens // groups) * groups != tokens,
        ),
        ("diff_decoder.in_dim != 3", dec.get("in_dim", 3) != 3),
        (
            "diff_decoder.cond_dim != decoder_dim",
            dec.get("cond_dim", top["decoder_dim"]) != top["decoder_dim"],
        ),
        ("diff_decoder.mlp_head=true", dec.get("mlp_head", False)),
        ("diff_decoder.share_time_encoding=true", dec.get("share_time_encoding", False)),
        ("different rope_base_len in model and diff_decoder", dec.get("rope_base_len", rope) != rope),
    ]
    bad = [name for name, flag in unsupported if flag]
    if bad:
        raise ValueError(f"official tokenizer options not supported by our tokenizer: {bad}.")
    image_size = int(top.get("sampling_resolution", 256))
    repa_layer = dec.get("repa_layer", 8)
    return TokenizerConfig(
        image_size=image_size,
        num_tokens=tokens,
        num_steps=groups,
        codebook_size=top["vq_codebook_size"],
        codebook_dim=top["vq_dim"],
        head_dim=OFFICIAL_CONSTANTS["head_dim"],
        mlp_ratio=OFFICIAL_CONSTANTS["mlp_ratio"],
        rope_theta=float(rope),
        encoder_patch_size=top["encoder_patch_size"],
        encoder_dim=top["encoder_dim"],
        num_encoder_layers=top["num_encoder_layers"],
        query_rank=OFFICIAL_CONSTANTS["query_rank"],
        condition_dim=top["decoder_dim"],
        num_condition_layers=top["num_decoder_layers"],
        position_table_size=OFFICIAL_CONSTANTS["position_table_size"],
        decoder_patch_size=dec["patch_size"],
        decoder_dim=dec["dim"],
        num_decoder_layers=dec["depth"],
        data_scale=float(dec.get("data_std", 1.0)),
        time_shift=float(dec.get("time_shift", 1.0)),
        repa_layer=repa_layer if repa_layer < dec["depth"] else None,  # official: the head never runs then
        repa_hidden_dim=OFFICIAL_CONSTANTS["repa_hidden_dim"],
        repa_dim=OFFICIAL_CONSTANTS["repa_dim"],
        repa_grid=min(OFFICIAL_CONSTANTS["max_repa_grid"], image_size // dec["patch_size"]),
    )


def tokenizer_config_from_official_yaml(path: str | os.PathLike) -> Any:
    """Read an official tokenizer YAML (``configs/tokenizer_v1.yaml`` style) into a ``TokenizerConfig``.

    The file holds a ``model:`` block (or is that block); see :func:`tokenizer_config_from_official`.
    """
    import yaml

    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            reason = " ".join(str(error).split())[:160]
            raise ValueError(f"{path} is not valid YAML ({reason}): fix it, or pass a preset name") from None
    model = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or "diff_decoder" not in model:
        raise ValueError(
            f"{path} is not an official D-AR tokenizer config: expected a 'model:' block with 'diff_decoder:'."
        )
    return tokenizer_config_from_official(model)


def resolve_tokenizer_config(spec: Any) -> Any:
    """A ``TokenizerConfig`` from a preset name, a ``TokenizerConfig`` or the path of an official YAML."""
    from tokenizer import TOKENIZER_PRESETS, TokenizerConfig

    if isinstance(spec, TokenizerConfig):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if text in TOKENIZER_PRESETS:
            return TOKENIZER_PRESETS[text]
        if text.endswith((".yaml", ".yml")) or Path(text).is_file():
            return tokenizer_config_from_official_yaml(text)
    raise ValueError(
        f"tokenizer_config={spec!r} is neither a preset ({sorted(TOKENIZER_PRESETS)}), a TokenizerConfig nor an "
        "official YAML file."
    )


def convert_tokenizer_state_dict(
    official_sd: Mapping[str, torch.Tensor], config: Any
) -> dict[str, torch.Tensor]:
    """Map official tokenizer weights onto ``DARTokenizer`` names, checked against ``config`` (cheap, no model).

    The key mapping itself (``tokenizer.official_keys.official_to_ours``) belongs to the tokenizer package.
    """
    from tokenizer.official_keys import official_to_ours

    if "quantize.embedding.weight" not in official_sd:
        gpt_like = "tok_embeddings.weight" in official_sd
        raise ValueError(
            "not an official D-AR tokenizer state dict (no quantize.embedding.weight)"
            + ("; this looks like a GPT checkpoint: pass it as the AR checkpoint." if gpt_like else ".")
        )
    return official_to_ours(dict(official_sd), config)
