"""Official D-AR checkpoint files: loading, and the GPT → stock Llama key mapping (reference §4.1, §6).

- :func:`load_official_state_dict` reads an official ``.pt`` file (bare or wrapped, ``ema`` preferred over
  ``model``; ``_orig_mod.`` / ``module.`` prefixes stripped; KV-cache buffers dropped) with
  ``torch.load(weights_only=True)``, from a local path or the Hugging Face Hub.
- :func:`convert_ar_state_dict` maps the LlamaGen-style GPT onto a stock ``LlamaForCausalLM``: the fused
  ``wqkv`` is split, the q/k rows of every head are permuted from the official interleaved-pair RoPE to the
  rotate-half RoPE of ``transformers``, and the class table is appended to the code table in
  :class:`llama_ar.VocabLayout` order. :func:`infer_ar_preset` reads the size from the shapes.
- :func:`load_strict` loads converted weights with a readable list of missing / unexpected / misshaped keys.

:mod:`dar.convert` assembles these with the tokenizer mapping into a pipeline folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

OFFICIAL_REPO_ID = "showlab/D-AR"
OFFICIAL_TOKENIZER_FILE = "D-AR-tokenizer_v1.pt"
OFFICIAL_HEAD_DIM = 64  # every official GPT uses 64-d heads (reference §4.1); heads = hidden // 64
_WRAPPER_KEYS = ("ema", "model", "module", "state_dict")  # in order of preference
_PREFIXES = ("_orig_mod.", "module.")
_KV_CACHE = re.compile(r"\.kv_cache\.[kv]_cache$")
_GPT_LAYER = re.compile(r"^layers\.(\d+)\.")


# ------------------------------------------------------------------------------------------------ loading
class _OfficialConfigPlaceholder:
    """Inert stand-in for the official ``config_util.Config`` pickled inside training checkpoints."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _describe_file(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the torch.save format), possibly truncated or not written by torch"
    if head[:1] == b"\x80":
        return "a legacy pickle file, possibly truncated"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a binary file starting with {head[:8]!r}"
    return f"a text file starting with {text[:40]!r}"


def _resolve_path(path_or_hub_id: str | os.PathLike, default_filename: str | None) -> Path:
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{path} is a directory; pass the official .pt checkpoint file itself.")
        return path
    text = str(path_or_hub_id)
    match = re.fullmatch(r"([\w.-]+/[\w.-]+)(?:/(.+))?", text)
    if match is None or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such checkpoint file: {text}.")
    repo_id, filename = match.group(1), match.group(2) or default_filename
    if filename is None:
        raise FileNotFoundError(
            f"{text} is not a local file. As a hub id it names no file: pass '{repo_id}/<file>', e.g. "
            f"'{OFFICIAL_REPO_ID}/D-AR-L-360K.pt' or '{OFFICIAL_REPO_ID}/D-AR-XL-360K.pt'."
        )
    from huggingface_hub import constants, hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # offline mode, network failure, missing repo or file
        offline = constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
        hint = (
            "HF_HUB_OFFLINE is set and the file is not in the local cache: unset it or download the file first"
            if offline
            else "check the network, the repo id and the file name, or download the file and pass its path"
        )
        raise FileNotFoundError(
            f"{text} is not a local file and downloading {filename!r} from the hub repo {repo_id!r} failed "
            f"({type(error).__name__}: {error}); {hint}."
        ) from error


def _torch_load(path: Path) -> Any:
    safe = [argparse.Namespace, (_OfficialConfigPlaceholder, "config_util.Config")]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals(safe):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _has_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, where: str) -> tuple[Mapping[str, Any], str]:
    for _ in range(3):  # e.g. {"model": {"module": {...}}}
        if _has_tensors(obj):
            return obj, where
        if not isinstance(obj, Mapping):
            break
        for key in _WRAPPER_KEYS:
            if _has_tensors(obj.get(key)) or (isinstance(obj.get(key), Mapping) and obj.get(key)):
                obj, where = obj[key], f"{where}[{key!r}]"
                break
        else:
            break
    if _has_tensors(obj):
        return obj, where
    found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"{where} holds no tensors (found {found}); expected a state dict of tensors, bare or under one of "
        f"the keys {list(_WRAPPER_KEYS)}."
    )


def _clean_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def load_official_state_dict(
    path_or_hub_id: str | os.PathLike, *, default_filename: str | None = None
) -> dict[str, torch.Tensor]:
    """Read an official D-AR checkpoint into a flat state dict of tensors.

    Accepts the released bare files and the training files (``{"model", "ema", "optimizer", "args", "config",
    …}``; ``ema`` is preferred over ``model``, then ``module`` / ``state_dict``). Prefixes ``_orig_mod.``
    (torch.compile) and ``module.`` (DDP) are stripped; ``*.kv_cache.k_cache`` / ``v_cache`` buffers are dropped.
    Loading always uses ``weights_only=True``; the pickled ``argparse.Namespace`` and official ``Config`` of
    training files are read as inert placeholders.

    Args:
        path_or_hub_id: a local file (``.pt``/``.pth``/``.bin``, or ``.safetensors``), or, when no such path
            exists, a hub reference ``owner/repo/file`` (``owner/repo`` uses ``default_filename``).
        default_filename: file to take from a bare hub repo id.

    Returns:
        ``{name: tensor}`` with official parameter names (CPU; possibly memory-mapped).

    Raises:
        FileNotFoundError: no such file and no hub download possible (offline, network).
        ValueError: a truncated or foreign file, or one without tensors; the message says what the file is.
    """
    path = _resolve_path(path_or_hub_id, default_filename)
    try:
        obj = _torch_load(path)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, KeyError, EOFError… by case
        raise ValueError(
            f"{path} could not be read as a PyTorch checkpoint: it is {_describe_file(path)} "
            f"({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}). Expected an official D-AR .pt file "
            "(a state dict saved with torch.save)."
        ) from error
    state, where = _unwrap(obj, path.name)
    if isinstance(obj, Mapping) and where != path.name:
        logger.info("%s: using the weights under %s (top-level keys: %s)", path, where, sorted(map(str, obj)))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where} entry {key!r} is a {type(value).__name__}, not a tensor.")
        name = _clean_key(str(key))
        if _KV_CACHE.search(name):
            continue
        if name in out:
            raise ValueError(
                f"{where}: keys {key!r} and another both map to {name!r} after prefix stripping."
            )
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------- AR model
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


def infer_ar_preset(state_dict: Mapping[str, torch.Tensor], *, num_tokens: int | None = None) -> Any:
    """Name the ``llama_ar`` preset matching an official GPT, or build an ``ARConfig`` for other sizes.

    Args:
        state_dict: an official GPT state dict (:func:`load_official_state_dict`).
        num_tokens: codes per image, used only for a custom config (default: ``ARConfig``'s, 256).

    Returns:
        ``"dar-b"``, ``"dar-l"``, ``"dar-xl"`` or ``"dar-xxl"`` when (hidden, layers, heads, FFN) match that
        preset, else an ``llama_ar.ARConfig`` with the checkpoint's sizes and 64-d heads.
    """
    from llama_ar import AR_PRESETS, ARConfig

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
    official_sd: Mapping[str, torch.Tensor], llama_config: Any, layout: Any
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


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(strict=True)`` with a readable list of missing, unexpected and misshaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshaped = [
        f"{k}: model {tuple(own[k].shape)} vs converted {tuple(state_dict[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if own[k].shape != state_dict[k].shape
    ]
    if missing or unexpected or misshaped:
        raise ValueError(
            f"converted {what} weights do not fit the model: missing {missing[:20]}, unexpected {unexpected[:20]}, "
            f"misshaped {misshaped[:20]}."
        )
    model.load_state_dict(state_dict, strict=True)
