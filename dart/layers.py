"""Fixed sin-cos feature tables shared by the DART modules (used as initial values or as inputs, never saved
as buffers)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sincos_table", "sincos_table_2d", "timestep_embedding"]


def sincos_table(positions: Tensor, dim: int) -> Tensor:
    """(n,) positions → (n, dim) float32 sin-cos features, frequencies 1 … 1/10000 (zero-padded to odd dim)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / max(half, 1))
    angles = positions.double()[:, None] * omega[None]
    out = torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.cat([out, out.new_zeros(len(positions), dim - 2 * half)], dim=1).float()


def sincos_table_2d(grid: int, dim: int) -> Tensor:
    """(grid², dim) 2-D sin-cos table in raster order: half the channels encode the row, half the column."""
    rows = torch.arange(grid).repeat_interleave(grid)
    cols = torch.arange(grid).repeat(grid)
    return torch.cat([sincos_table(rows, dim // 2), sincos_table(cols, dim - dim // 2)], dim=1)


def timestep_embedding(s: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of flow times s ∈ [0, 1] (scaled by 1000 as in DiT): (N,) → (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=s.device, dtype=torch.float32) / half)
    args = 1000.0 * s.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
