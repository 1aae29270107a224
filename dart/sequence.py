"""Patches, the DART token sequence and its attention masks (DART §3, reference dart.md §1 and §3).

Full sequence (length 1 + T·K, noisiest level first)::

    position   0       1 … K        K+1 … 2K      …   (T−1)K+1 … TK
    content    [class] [x_T tokens] [x_{T−1} …]   …   [x_1 tokens]

Every level reuses the same spatial position ids: the class token has position id 0 and the token of patch k
(raster order) has position id k + 1 at every level, so the backbone's 1-D RoPE sees patch k of two levels at
relative distance 0; a learned level embedding tells the levels apart (the simple choice of dart.md §2).

DART and DART-FM feed the full sequence and read level t's x̂_0 from the hidden states of level t's own
tokens. DART-AR feeds the full sequence without its last token (length T·K) and reads the prediction of the
token at full position j + 1 from the hidden state at position j (a one-token shift across level boundaries).

Masks are boolean "may attend" tensors, ``mask[query, key]``:

- ``"block_causal"`` (DART): level t sees the class token, every noisier level and all of its own level;
- ``"markovian"`` (ablation): level t sees the class token, its own level and level t + 1 only. The mask acts
  per layer, so level t + 1's hidden states carry what they read from level t + 2 one layer earlier: after L
  layers level t depends on levels t … t + L (exactly Markovian only for L = 1);
- ``"own_level"`` (ablation): level t sees the class token and its own level only, at every layer: the strictly
  Markovian denoiser x̂_0(x_t) of standard diffusion, with DART's backbone, sequence and compute;
- ``"token_causal"`` (DART-AR): position q sees positions ≤ q.

No query attends to a key after the end of its own level block, so the rows of a block, cut at the block's
end, are exactly what an incremental (KV-cached) decoder needs: :meth:`SequenceLayout.mask` with ``rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MASK_KINDS", "SequenceLayout", "additive_mask", "patchify", "unpatchify"]

MASK_KINDS = ("block_causal", "markovian", "own_level", "token_causal")


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Cut images into raster-ordered patch tokens.

    Args:
        x: (B, C, S, S) with S a multiple of ``patch_size``.
        patch_size: p.

    Returns:
        (B, K, C·p²) with K = (S/p)², token k = patch (k // (S/p), k % (S/p)); values ordered (c, row, col).
    """
    batch, channels, height, width = x.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"a {height}×{width} array does not split into {p}×{p} patches.")
    x = x.reshape(batch, channels, height // p, p, width // p, p)  # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(batch, (height // p) * (width // p), channels * p * p)


def unpatchify(tokens: Tensor, patch_size: int, channels: int) -> Tensor:
    """Inverse of :func:`patchify` for square grids: (B, K, C·p²) → (B, C, S, S), S = √K · p."""
    batch, num_tokens, dim = tokens.shape
    grid = int(round(num_tokens**0.5))
    p = patch_size
    if grid * grid != num_tokens or dim != channels * p * p:
        raise ValueError(
            f"cannot unpatchify {num_tokens} tokens of {dim} values into a square {channels}-channel image "
            f"with {p}×{p} patches."
        )
    x = tokens.reshape(batch, grid, grid, channels, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, p, gw, p)
    return x.reshape(batch, channels, grid * p, grid * p)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean "may attend" (q, kv) mask as the 4-D additive float mask the stock Llama accepts.

    transformers 5.24's ``LlamaModel`` hands a 4-D ``attention_mask`` to the attention implementation
    unchanged (``masking_utils._preprocess_mask_arguments`` returns early for 4-D masks), so it must already be
    in that implementation's format; an additive float mask (0 where allowed, the dtype's minimum elsewhere)
    is right for both ``"sdpa"`` and ``"eager"`` (a boolean one would be *added* by ``"eager"``).

    Returns:
        (1, 1, q, kv) tensor of ``dtype``; broadcasts over batch and heads.
    """
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass(frozen=True)
class SequenceLayout:
    """Index bookkeeping of the full DART sequence (module docstring).

    Args:
        num_levels: T.
        tokens_per_level: K.
        mask_kind: one of :data:`MASK_KINDS`.
    """

    num_levels: int
    tokens_per_level: int
    mask_kind: str

    def __post_init__(self) -> None:
        if self.mask_kind not in MASK_KINDS:
            raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {self.mask_kind!r}.")

    @classmethod
    def from_config(cls, config) -> SequenceLayout:
        return cls(config.num_levels, config.tokens_per_level, config.mask_kind)

    @property
    def full_length(self) -> int:
        """1 + T·K: class token and every level."""
        return 1 + self.num_levels * self.tokens_per_level

    @property
    def input_length(self) -> int:
        """Length fed in teacher forcing: the full sequence, without its last token for DART-AR."""
        return self.full_length - (self.mask_kind == "token_causal")

    def level_start(self, level: int) -> int:
        """Full-sequence position of level t's first token."""
        self._check_level(level)
        return 1 + (self.num_levels - level) * self.tokens_per_level

    def output_start(self, level: int) -> int:
        """Position whose hidden state predicts level t's first token (shifted by one for DART-AR)."""
        return self.level_start(level) - (self.mask_kind == "token_causal")

    def level_ids(self, device=None) -> Tensor:
        """(full_length,) int64 level of every position; the class token counts as level T + 1."""
        levels = torch.arange(self.num_levels, 0, -1, device=device).repeat_interleave(self.tokens_per_level)
        return torch.cat([torch.full((1,), self.num_levels + 1, device=device), levels])

    def position_ids(self, device=None) -> Tensor:
        """(full_length,) int64 RoPE position ids: 0 for the class token, k + 1 for patch k at every level."""
        spatial = torch.arange(1, self.tokens_per_level + 1, device=device).repeat(self.num_levels)
        return torch.cat([torch.zeros(1, dtype=torch.long, device=device), spatial])

    def mask(self, rows: tuple[int, int] | None = None, device=None) -> Tensor:
        """Boolean "may attend" mask.

        Args:
            rows: ``(start, end)`` query positions; keys are then positions ``[0, end)`` (what a KV cache holds
                after feeding them). ``None``: the full (full_length, full_length) mask.
            device: device of the result.

        Returns:
            (end − start, end) bool, ``True`` where the query may attend to the key.
        """
        start, end = (0, self.full_length) if rows is None else rows
        if not 0 <= start < end <= self.full_length:
            raise ValueError(f"rows must satisfy 0 ≤ start < end ≤ {self.full_length}, got {rows}.")
        query = torch.arange(start, end, device=device)[:, None]
        key = torch.arange(end, device=device)[None]
        if self.mask_kind == "token_causal":
            return key <= query
        levels = self.level_ids(device)
        q_level, k_level = levels[query], levels[key]
        if self.mask_kind == "block_causal":
            return k_level >= q_level
        class_token = self.num_levels + 1
        own = (k_level == class_token) | (k_level == q_level)
        if self.mask_kind == "own_level":
            return own
        return own | (k_level == q_level + 1)  # markovian

    def _check_level(self, level: int) -> None:
        if not 1 <= level <= self.num_levels:
            raise ValueError(f"level must be in 1 … {self.num_levels}, got {level}.")
