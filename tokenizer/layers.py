"""Shared layers of the tokenizer: attention with QK-norm and 2-D RoPE, MLP, gated block, time features.

Implements the building blocks of D-AR (Gao & Shou 2025) §3.1–3.2 as described in reference §2.2–2.3 and
§2.7: separate q/k/v/proj projections with bias, an affine LayerNorm over each head (QK-norm) applied *before*
the rotary embedding, Flux-style 2-D RoPE on interleaved pairs (first half of the pairs rotated by the row
index, second half by the column index), PyTorch SDPA, SiLU MLPs, the zero-gated pre-LN block, and the
sinusoidal time features of 1000·s (cosine half first). Sub-module names follow the official checkpoint so
that the rename table (``tokenizer/official_keys.py``) stays short.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RopeTable = Tensor
"""complex64 (L, head_dim // 2): cos + i·sin of the rotation angle of every interleaved pair at every position."""

LAYER_NORM_EPS = 1e-6


def parameter_free_layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm without weight or bias (eps 1e-6), as used around patches, query outputs and conditions."""
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS, elementwise_affine=False, bias=False)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Rearrange images into flattened patches, row-major, channel index c·p² + i·p + j.

    Args:
        images: (B, C, H, W) float; H and W multiples of ``patch_size``.
        patch_size: p.

    Returns:
        (B, (H/p)·(W/p), C·p²) tensor; pure rearrangement (no arithmetic).
    """
    b, c, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)  # (B, C, gh, i, gw, j)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * patch_size * patch_size)


def unpatchify(tokens: Tensor, patch_size: int, grid_h: int, grid_w: int) -> Tensor:
    """Inverse of :func:`patchify`: (B, gh·gw, C·p²) → (B, C, gh·p, gw·p)."""
    b, _, d = tokens.shape
    c = d // (patch_size * patch_size)
    x = tokens.reshape(b, grid_h, grid_w, c, patch_size, patch_size)  # (B, gh, gw, C, i, j)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid_h * patch_size, grid_w * patch_size)


def rope_2d_table(
    height: int,
    width: int,
    head_dim: int,
    theta: float = 10000.0,
    num_identity: int = 0,
    device: torch.device | str | None = None,
) -> RopeTable:
    """Rotations of the 2-D rotary embedding over a row-major ``height × width`` grid.

    Each head vector is split into head_dim/2 adjacent pairs (2j, 2j+1). Pairs j < head_dim/4 rotate by
    r·ω_j, the others by c·ω_{j − head_dim/4}, with ω_k = θ^(−2k / (head_dim/2)) and integer grid coordinates
    (r, c). ``num_identity`` extra positions with angle 0 (identity rotation) are appended, as for the
    encoder's learned queries. Angles are computed in float64; cos and sin are cast to float32.

    Args:
        height: grid rows.
        width: grid columns.
        head_dim: attention head dimension, a multiple of 4.
        theta: RoPE base.
        num_identity: positions appended after the grid that are not rotated.
        device: where to build the table.

    Returns:
        complex64 (height·width + num_identity, head_dim // 2) table cos(angle) + i·sin(angle).
    """
    if head_dim % 4:
        raise ValueError(f"head_dim must be a multiple of 4 for 2-D RoPE, got {head_dim}")
    axis_pairs = head_dim // 4
    k = torch.arange(axis_pairs, dtype=torch.float64, device=device)
    omega = theta ** (-2.0 * k / (head_dim // 2))  # (head_dim/4,)
    rows = torch.arange(height, dtype=torch.float64, device=device).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.float64, device=device).repeat(height)
    angles = torch.cat([rows[:, None] * omega, cols[:, None] * omega], dim=-1)  # (h·w, head_dim/2)
    if num_identity:
        angles = torch.cat([angles, angles.new_zeros(num_identity, angles.shape[1])], dim=0)
    return torch.complex(torch.cos(angles).float(), torch.sin(angles).float())


def apply_rope(x: Tensor, rope: RopeTable) -> Tensor:
    """Rotate the interleaved pairs (2j, 2j+1) of ``x`` by ``rope``: (a, b) → (a·cos − b·sin, a·sin + b·cos).

    Computed as one complex multiplication in float32 (much cheaper on CPU than separate real products).

    Args:
        x: (..., L, head_dim) float, last dimension contiguous.
        rope: complex64 (L, head_dim // 2) from :func:`rope_2d_table`.

    Returns:
        Tensor shaped and typed like ``x``.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., L, head_dim/2) complex
    return torch.view_as_real(pairs * rope).flatten(-2).type_as(x)


class RopeCache:
    """Memoises :func:`rope_2d_table` by (height, width, num_identity, device); not part of any state dict."""

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self._tables: dict[tuple[int, int, int, str], RopeTable] = {}

    def __call__(self, height: int, width: int, device: torch.device, num_identity: int = 0) -> RopeTable:
        key = (height, width, num_identity, str(device))
        table = self._tables.get(key)
        if table is None:
            table = rope_2d_table(height, width, self.head_dim, self.theta, num_identity, device)
            self._tables[key] = table
        return table


class Attention(nn.Module):
    """Multi-head attention with biased q/k/v/proj projections, QK-norm before RoPE, and SDPA.

    Self-attention when ``context`` is None (RoPE on queries and keys); cross-attention otherwise (RoPE on the
    queries only; keys and values come from ``context`` unrotated).
    """

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=LAYER_NORM_EPS)
        self.k_norm = nn.LayerNorm(head_dim, eps=LAYER_NORM_EPS)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))  # (B, L, H, hd)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rope: RopeTable | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Attend.

        Args:
            x: (B, L, dim) queries (and keys/values for self-attention).
            context: (B, M, dim) keys/values for cross-attention, or None.
            rope: rotary table for the L query positions (and the keys in self-attention), or None.
            attn_mask: boolean (L, M) "may attend" mask, or None.
            is_causal: causal self-attention.

        Returns:
            (B, L, dim).
        """
        kv = x if context is None else context
        q = self.q_norm(self._heads(self.q(x))).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_norm(self._heads(self.k(kv))).transpose(1, 2)  # (B, H, M, hd)
        v = self._heads(self.v(kv)).transpose(1, 2)  # (B, H, M, hd)
        if rope is not None:
            q = apply_rope(q, rope)
            if context is None:
                k = apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.proj(out.transpose(1, 2).flatten(-2))  # (B, L, dim)


class Mlp(nn.Module):
    """fc1 → SiLU → fc2, both with bias (timm ``Mlp`` layout)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def init_linear_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """Official block init: Linear weights truncated-normal(σ), biases 0; affine LayerNorms 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TransformerBlock(nn.Module):
    """Pre-LN block with per-channel zero-initialised gates: the identity at initialisation.

    x ← x + gate1 ⊙ Attn(LN1(x)); x ← x + gate2 ⊙ MLP(LN2(x)). Used by the encoder and the condition network.
    """

    def __init__(self, dim: int, head_dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.gate1 = nn.Parameter(torch.zeros(dim))
        self.gate2 = nn.Parameter(torch.zeros(dim))
        self.attention = Attention(dim, head_dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        init_linear_trunc_normal(self)

    def forward(
        self,
        x: Tensor,
        rope: RopeTable | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """(B, L, dim) → (B, L, dim)."""
        x = x + self.gate1 * self.attention(
            self.norm1(x), rope=rope, attn_mask=attn_mask, is_causal=is_causal
        )
        return x + self.gate2 * self.mlp(self.norm2(x))


def timestep_features(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of ``scale · t``: [cos(scale·t·f_k), sin(scale·t·f_k)], f_k = max_period^(−k/(dim/2)).

    Args:
        t: (B,) float times in [0, 1].
        dim: feature width (even).
        scale: multiplier applied to t first (1000 in D-AR).
        max_period: lowest frequency is 1 / max_period.

    Returns:
        (B, dim) float32 features, cosine half first.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t * scale)[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """MLP over the sinusoidal time features: Linear → SiLU → Linear (``mlp.0`` / ``mlp.2``)."""

    def __init__(self, dim: int, frequency_dim: int | None = None) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim or dim
        self.mlp = nn.Sequential(nn.Linear(self.frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t_features: Tensor) -> Tensor:
        """(B, frequency_dim) features from :func:`timestep_features` → (B, dim)."""
        return self.mlp(t_features)


def run_block(owner: nn.Module, block: nn.Module, *args: object) -> Tensor:
    """Call ``block(*args)``, through the owner's gradient-checkpointing function when diffusers enabled it."""
    if getattr(owner, "gradient_checkpointing", False) and torch.is_grad_enabled():
        return owner._gradient_checkpointing_func(block, *args)
    return block(*args)
