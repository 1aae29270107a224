"""Rename table between the official D-AR tokenizer checkpoint and :class:`tokenizer.DARTokenizer`.

Describes the official ``D-AR-tokenizer_v1.pt`` state dict of reference §6.2 (830 entries) in a few ordered
prefix rules plus the tensors that change layout:

- 1×1 convolutions and the patch convolution become Linear layers: ``patchify`` (D, 3, p, p) → (D, 3·p²)
  (row-major flatten = channel index c·p² + i·p + j, the order :func:`tokenizer.layers.patchify` uses),
  ``quant_in_conv`` / ``quant_out_conv`` / ``conv_in`` / ``conv_out`` (out, in, 1, 1) → (out, in);
- the learnable codebook ``quantize.embedding.weight`` (K, d) becomes the EMA codebook of
  vector-quantize-pytorch: ``_codebook.embed`` (1, K, d), row-normalised (the official code normalises it at
  every use), with ``embed_avg`` = embed, ``cluster_size`` = ones and ``initted`` = True;
- dropped: ``quantize.codebook_used`` (usage statistics) and, when the target has no REPA head,
  ``diff_decoder.net.repa_out.*`` (training only).

``official_to_ours`` checks the result strictly against the model the config builds; ``ours_to_official`` is
its inverse (it writes a zero ``codebook_used`` buffer), used to build official-format files in tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenizer.checkpoint import key_report
from tokenizer.config import TokenizerConfig

# (official prefix, our prefix), first match wins; the codebook is handled separately (CODEBOOK_KEYS).
RENAME_RULES: list[tuple[str, str]] = [
    ("encoder_layers.", "encoder.layers."),
    ("decoder_layers.", "conditioning.layers."),
    ("patchify.", "encoder.patch_embed."),
    ("query_embedding.", "encoder.query_embedding."),
    ("query_linear.", "encoder.query_linear."),
    ("quant_in_conv.", "encoder.quant_in."),
    ("quant_out_conv.", "conditioning.quant_out."),
    ("decoder_embedding.", "conditioning.position_embedding."),
    ("diff_decoder.net.", "decoder."),
]
CODEBOOK_KEYS = ("quantize.embedding.weight", "quantizer.vq._codebook.embed")  # (official, ours)
CODEBOOK_STATE_KEYS = (
    "quantizer.vq._codebook.embed_avg",
    "quantizer.vq._codebook.cluster_size",
    "quantizer.vq._codebook.initted",
)
# Official keys with no counterpart in our model.
DROPPED_KEYS = ("quantize.codebook_used",)
OFFICIAL_USAGE_BUFFER_SIZE = 65536
REPA_HEAD_PREFIX = "diff_decoder.net.repa_out."

# Our weights that are official convolution kernels, by our key.
CONV_KEYS: tuple[str, ...] = (
    "encoder.patch_embed.weight",
    "encoder.quant_in.weight",
    "conditioning.quant_out.weight",
    "decoder.conv_in.weight",
    "decoder.conv_out.weight",
)


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for source, target in rules:
        if key.startswith(source):
            return target + key[len(source) :]
    return None


def official_key_to_ours(key: str) -> str | None:
    """Our name for an official key, or None when no rule matches (dropped keys included)."""
    if key == CODEBOOK_KEYS[0]:
        return CODEBOOK_KEYS[1]
    return _rename(key, RENAME_RULES)


def our_key_to_official(key: str) -> str | None:
    """Official name for one of our keys, or None for our EMA codebook statistics (no official counterpart)."""
    if key == CODEBOOK_KEYS[1]:
        return CODEBOOK_KEYS[0]
    if key in CODEBOOK_STATE_KEYS:
        return None
    return _rename(key, [(ours, official) for official, ours in RENAME_RULES])


def expected_shapes(config: TokenizerConfig) -> dict[str, torch.Size]:
    """Key → shape of the state dict of the DARTokenizer that ``config`` builds (built on the meta device)."""
    from tokenizer.model import DARTokenizer

    with torch.device("meta"):
        model = DARTokenizer(**config.to_dict())
    return {k: v.shape for k, v in model.state_dict().items()}


def _unit_rows(codebook: Tensor) -> Tensor:
    """Row-normalise a codebook, leaving rows that are unit-length already bit for bit unchanged.

    The official code normalises at every use, so its stored rows may have any norm; rows written by
    :func:`ours_to_official` are unit-length, and normalising them again would change ~40 % of them in the last
    bit, so the official-layout round trip would not be exact.
    """
    norms = codebook.norm(dim=-1, keepdim=True)
    unit = (norms - 1).abs() <= 4 * torch.finfo(codebook.dtype).eps
    return torch.where(unit, codebook, F.normalize(codebook, dim=-1))


def official_to_ours(state_dict: dict[str, Tensor], config: TokenizerConfig) -> dict[str, Tensor]:
    """Convert an official tokenizer state dict to ours, strictly.

    Args:
        state_dict: official key → tensor (bare ``VQModel`` weights, wrapper prefixes such as ``_orig_mod.``
            already stripped, as ``dar.convert.load_official_state_dict`` does).
        config: the configuration of the target model (``TOKENIZER_PRESETS["tokenizer_v1"]`` for the release).

    Returns:
        Our key → tensor, ready for ``DARTokenizer(**config.to_dict()).load_state_dict(..., strict=True)``.

    Raises:
        ValueError: listing official keys no rule knows, keys our model needs but did not get, and shape
            mismatches.
    """
    ours: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if key in DROPPED_KEYS or (key.startswith(REPA_HEAD_PREFIX) and not config.has_repa_head):
            continue
        new_key = official_key_to_ours(key)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key == CODEBOOK_KEYS[1]:
            embed = _unit_rows(tensor.float())[None]  # (1, K, d)
            ours[new_key] = embed
            ours["quantizer.vq._codebook.embed_avg"] = embed.clone()
            ours["quantizer.vq._codebook.cluster_size"] = torch.ones(embed.shape[:2], device=embed.device)
            ours["quantizer.vq._codebook.initted"] = torch.tensor(True, device=embed.device)
        elif new_key in CONV_KEYS:
            ours[new_key] = tensor.reshape(tensor.shape[0], -1)  # (out, in, kh, kw) → (out, in·kh·kw)
        else:
            ours[new_key] = tensor
    problems = key_report(expected_shapes(config), {k: v.shape for k, v in ours.items()})
    if unknown or problems:
        hint = (
            " (a checkpoint without repa_out needs repa_layer=None)" if "repa_out" in (problems or "") else ""
        )
        raise ValueError(
            "official tokenizer checkpoint does not match the configuration: "
            f"unknown official keys {unknown}; {problems or 'all model keys present'}{hint}"
        )
    return ours


def ours_to_official(state_dict: dict[str, Tensor], config: TokenizerConfig) -> dict[str, Tensor]:
    """Inverse of :func:`official_to_ours`: our state dict → the official ``VQModel`` layout.

    Args:
        state_dict: our key → tensor (e.g. ``tok.state_dict()``).
        config: the configuration of the model the weights come from.

    Returns:
        Official key → tensor, including a zero ``quantize.codebook_used`` buffer (65536,).
    """
    official: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if key in CODEBOOK_STATE_KEYS:
            continue
        new_key = our_key_to_official(key)
        if new_key is None:
            raise ValueError(f"no official name for {key!r}")
        if key == CODEBOOK_KEYS[1]:
            tensor = tensor[0]  # (1, K, d) → (K, d)
        elif key == "encoder.patch_embed.weight":
            p = config.encoder_patch_size
            tensor = tensor.reshape(tensor.shape[0], 3, p, p)  # (D, 3·p²) → (D, 3, p, p)
        elif key in CONV_KEYS:
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # (out, in) → (out, in, 1, 1)
        official[new_key] = tensor
    device = next(iter(state_dict.values())).device if state_dict else None
    official[DROPPED_KEYS[0]] = torch.zeros(OFFICIAL_USAGE_BUFFER_SIZE, device=device)
    return official
