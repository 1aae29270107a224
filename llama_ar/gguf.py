"""Export of the D-AR prior to GGUF, the file format of llama.cpp (for :mod:`llama_ar.llamacpp`).

The prior is a stock ``LlamaForCausalLM`` (D-AR §3.3), so it maps one to one onto llama.cpp's ``llama``
architecture: the tensor names follow llama.cpp's own converter (``convert_hf_to_gguf.py``, ``LlamaModel``),
and so does the one layout change: HF Llama rotates the halves of each head (``rotate_half``) while llama.cpp's
``llama`` architecture rotates adjacent pairs, so the rows of ``q_proj`` / ``k_proj`` are permuted per head from
``[x_0 … x_{d/2−1}, y_0 … y_{d/2−1}]`` to ``[x_0, y_0, x_1, y_1, …]`` (the inverse of the official → HF
permutation in :mod:`dar.convert`). ``tests/llama_ar/test_gguf.py`` checks the result by comparing llama.cpp's
logits with transformers'.

Vocabulary. There is no text tokenizer: ``tokenizer.ggml.model`` is ``"none"`` (llama.cpp's "no vocab" type),
and ``llama.vocab_size`` gives the number of (dummy, textless) token ids, ``codebook_size + num_classes + 1``,
so llama.cpp sizes its logits to the full table. Prompts are fed as token ids, never as text; llama.cpp adds no
BOS token. The D-AR layout travels as custom metadata: ``dar.layout`` (the JSON of
:meth:`llama_ar.VocabLayout.to_dict`) and ``dar.num_tokens`` (codes per image).

Dtypes: ``"f32"``; ``"f16"`` and ``"q8_0"`` store every matrix (embedding table and head included) in that
type and keep the RMSNorm weights in f32, as llama.cpp's converter does. A matrix whose rows do not split into
32-value Q8_0 blocks falls back to f16 (logged).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .checkpoint import check_ar_folder
from .layout import CONFIG_KEY, VocabLayout

__all__ = [
    "GGUF_DTYPES",
    "LAYOUT_KEY",
    "NUM_TOKENS_KEY",
    "export_gguf",
    "permute_for_gguf",
    "resolve_ar_folder",
]

logger = logging.getLogger(__name__)

GGUF_DTYPES = ("f32", "f16", "q8_0")
LAYOUT_KEY = "dar.layout"
"""GGUF metadata key holding ``json.dumps(VocabLayout.to_dict())``."""
NUM_TOKENS_KEY = "dar.num_tokens"
"""GGUF metadata key holding the number of codes per image (uint32)."""

_GGUF_MISSING = "the GGUF exporter needs the `gguf` package: pip install -e .[serve]"


def _import_gguf():
    try:
        import gguf
    except ImportError as error:
        raise ImportError(_GGUF_MISSING) from error
    return gguf


def resolve_ar_folder(checkpoint: str | os.PathLike) -> Path:
    """The AR-model folder of ``checkpoint``: the folder itself, or its ``ar_model/`` for a pipeline folder."""
    path = Path(checkpoint)
    if (path / "config.json").is_file():
        return path
    if (path / "ar_model" / "config.json").is_file():
        return path / "ar_model"
    raise FileNotFoundError(
        f"{path} holds neither config.json nor ar_model/config.json: pass a pipeline folder written by "
        "DARPipeline.save_pretrained or its ar_model/ folder."
    )


def permute_for_gguf(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection from HF's rotate-half RoPE layout to llama.cpp's interleaved one.

    Args:
        weight: (num_heads · head_dim, in_features) projection weight, head_dim even.
        num_heads: Heads of this projection (key/value heads for ``k_proj``).

    Returns:
        The same rows reordered per head: row ``j`` of the first half and row ``j`` of the second half of a
        head become rows ``2j`` and ``2j + 1``.
    """
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"{rows} rows do not split into {num_heads} heads of even width.")
    return (
        weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _check_config(config: dict[str, Any], source: Path) -> None:
    problems = []
    if config.get("model_type") != "llama":
        problems.append(f"model_type is {config.get('model_type')!r}, not 'llama'")
    if CONFIG_KEY not in config:
        problems.append(f"no '{CONFIG_KEY}' entry (not a D-AR prior built by llama_ar.build_ar_model)")
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {config['hidden_act']!r}; llama.cpp's llama arch runs SiLU")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            problems.append(f"{flag} is set; llama.cpp's llama arch has no such biases")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type is {rope.get('rope_type')!r}; only the default RoPE is exported")
    if problems:
        raise ValueError(f"cannot export {source} to GGUF: " + "; ".join(problems) + ".")


def _load_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` (or its sharded index) as float32 numpy arrays."""
    import torch
    from safetensors import safe_open

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        raise FileNotFoundError(
            f"{folder} has no model.safetensors (or model.safetensors.index.json); only safetensors are read."
        )
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key).to(torch.float32).numpy()
    return tensors


def _tensor_names(num_layers: int, tied: bool) -> dict[str, str]:
    """HF key → GGUF tensor name (llama.cpp's ``llama`` arch)."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not tied:
        names["lm_head.weight"] = "output.weight"
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for i in range(num_layers):
        for hf, gguf_name in per_layer.items():
            names[f"model.layers.{i}.{hf}"] = f"blk.{i}.{gguf_name}"
    return names


def export_gguf(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: Literal["f32", "f16", "q8_0"] = "f32",
    num_tokens: int | None = None,
    name: str | None = None,
) -> Path:
    """Write the AR prior of ``checkpoint`` as a GGUF file that llama.cpp loads with its ``llama`` architecture.

    Args:
        checkpoint: A pipeline folder (``DARPipeline.save_pretrained``) or its ``ar_model/`` folder: ``config.json``
            with ``dar_layout`` and ``model.safetensors`` (or a sharded safetensors index).
        out: Path of the ``.gguf`` file to write (parent folders are created; written to a temporary file in the
            same folder first, then renamed, so an interrupted export leaves no partial file).
        dtype: ``"f32"``, ``"f16"`` or ``"q8_0"`` for the matrices (RMSNorm weights stay f32).
        num_tokens: Codes per image stored as ``dar.num_tokens``; ``None`` reads ``max_new_tokens`` from the
            folder's ``generation_config.json`` and falls back to the model's capacity
            (``max_position_embeddings − 1``).
        name: ``general.name``; defaults to the folder name.

    Returns:
        The path written.

    Raises:
        ImportError: without the ``gguf`` package (``pip install -e .[serve]``).
        ValueError: for a config llama.cpp's ``llama`` arch cannot run, a damaged weight file, or missing,
            unexpected or misshaped weights (listed; the check of :func:`llama_ar.checkpoint.check_ar_folder`).
    """
    gguf = _import_gguf()
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {GGUF_DTYPES}, got {dtype!r}.")
    folder = resolve_ar_folder(checkpoint)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    _check_config(config, folder)
    layout = VocabLayout.from_dict(config[CONFIG_KEY])
    if int(config["vocab_size"]) != layout.vocab_size:
        raise ValueError(
            f"{folder}/config.json has vocab_size={config['vocab_size']} but its {CONFIG_KEY} implies "
            f"{layout.vocab_size}; the config was edited inconsistently."
        )
    num_layers = int(config["num_hidden_layers"])
    num_heads = int(config["num_attention_heads"])
    num_kv_heads = int(config.get("num_key_value_heads") or num_heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // num_heads)
    capacity = int(config["max_position_embeddings"]) - 1
    if num_tokens is None:
        generation = folder / "generation_config.json"
        if generation.is_file():
            num_tokens = json.loads(generation.read_text(encoding="utf-8")).get("max_new_tokens")
        num_tokens = num_tokens or capacity
    if not 1 <= int(num_tokens) <= capacity:
        raise ValueError(
            f"num_tokens must lie in [1, {capacity}] (max_position_embeddings − 1), got {num_tokens}."
        )
    tied = bool(config.get("tie_word_embeddings", False))
    rope = config.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))

    check_ar_folder(folder)  # every weight present, of the shape the config (and so llama.cpp) is told
    tensors = _load_state_dict(folder)

    quant = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[dtype]
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(temp_name, arch="llama")
        default_name = folder.resolve().parent.name if folder.name == "ar_model" else folder.resolve().name
        writer.add_name(name or default_name)
        writer.add_file_type(int(file_type))
        if dtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(capacity + 1)
        writer.add_embedding_length(hidden)
        writer.add_block_count(num_layers)
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_head_count(num_heads)
        writer.add_head_count_kv(num_kv_heads)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(rope_theta)
        writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
        writer.add_vocab_size(layout.vocab_size)
        writer.add_tokenizer_model("none")
        writer.add_string(LAYOUT_KEY, json.dumps(layout.to_dict()))
        writer.add_uint32(NUM_TOKENS_KEY, int(num_tokens))

        for key, gguf_name in _tensor_names(num_layers, tied).items():
            data = tensors[key]
            if key.endswith("q_proj.weight"):
                data = permute_for_gguf(data, num_heads)
            elif key.endswith("k_proj.weight"):
                data = permute_for_gguf(data, num_kv_heads)
            data = np.ascontiguousarray(data, dtype=np.float32)
            kind = quant if data.ndim == 2 else gguf.GGMLQuantizationType.F32
            if kind == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
                logger.warning(
                    "%s: rows of %d values are not Q8_0 blocks of 32; stored as f16", key, data.shape[-1]
                )
                kind = gguf.GGMLQuantizationType.F16
            if kind == gguf.GGMLQuantizationType.Q8_0:
                writer.add_tensor(gguf_name, gguf.quants.quantize(data, kind), raw_dtype=kind)
            else:
                writer.add_tensor(gguf_name, gguf.quants.quantize(data, kind))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp_name, out_path)
    except BaseException:
        if os.path.exists(temp_name):
            os.remove(temp_name)
        raise
    logger.info("wrote %s (%s, %d tensors)", out_path, dtype, len(tensors))
    return out_path
