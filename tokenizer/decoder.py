"""Pixel-space velocity network of the tokenizer: SiT blocks whose adaLN is driven by cross-attention.

Implements the diffusion decoder of D-AR (Gao & Shou 2025) §3.1–3.2 as described in reference §2.7 and §2.10:

- conditions go through ``cond_mlp`` and a parameter-free LayerNorm;
- images are patched by pure rearrangement (channel index c·p² + i·p + j) and embedded by ``conv_in``
  (a Linear here; the official 1×1 convolution is the same map);
- every SiT block has its own time MLP, its own condition MLP, a cross-attention from the (normalised) image
  tokens, with RoPE on the queries only, to the conditions, and an ``adaLN_modulation`` applied per token to
  time embedding + cross-attention output. The cross-attention output only modulates; it is never added to
  the residual stream (``decoder_condition_residual=True`` adds it, an option of ours). Self-attention uses
  2-D RoPE over the token grid; ``decoder_position_embedding=True`` (ours) adds learned absolute positions;
  ``decoder_condition_tokens=True`` (ours) also appends the conditions to the self-attention sequence as
  extra tokens (identity rotation), in-context as in DiT's in-context variant, dropped before ``conv_out``;
  ``decoder_estimate_input=True`` (ours) adds ``estimate_in`` of a patched image estimate to the image tokens;
- a final parameter-free LayerNorm and the zero-initialised ``conv_out`` give the velocity;
- an optional REPA head maps the features *entering* block ``repa_layer``, average-pooled to a
  ``repa_grid × repa_grid`` grid, to the target feature width (training only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenizer.config import TokenizerConfig
from tokenizer.layers import (
    Attention,
    Mlp,
    RopeCache,
    RopeTable,
    TimestepEmbedder,
    init_linear_trunc_normal,
    parameter_free_layer_norm,
    patchify,
    run_block,
    timestep_features,
    unpatchify,
)


@dataclass
class DecoderOutput:
    """Output of :class:`PixelDecoder`.

    Attributes:
        velocity: (B, 3, H, W) predicted velocity x₁ − x₀ in scaled data units.
        repa_features: (B, repa_grid², repa_dim) REPA head output, or None when not requested.
    """

    velocity: Tensor
    repa_features: Tensor | None = None


class SiTBlock(nn.Module):
    """One SiT block with per-token adaLN from (time embedding + cross-attention to the conditions)."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: int = 4, condition_residual: bool = False) -> None:
        super().__init__()
        self.condition_residual = condition_residual
        self.attention = Attention(dim, head_dim)
        self.cross_attn = Attention(dim, head_dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.norm = parameter_free_layer_norm(dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.time_embed = TimestepEmbedder(dim)
        self.cond_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        init_linear_trunc_normal(self)
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(
        self,
        x: Tensor,
        cond: Tensor,
        t_features: Tensor,
        rope: RopeTable,
        cond_mask: Tensor | None = None,
        self_mask: Tensor | None = None,
    ) -> Tensor:
        """Update the image tokens.

        Args:
            x: (B, L, dim) image tokens.
            cond: (B, M, dim) conditions the step sees (after ``cond_mlp`` and LayerNorm).
            t_features: (B, dim) sinusoidal features of the (shifted) time.
            rope: rotary table for the L image tokens.
            cond_mask: optional (B, 1, 1, M) boolean "may attend" mask over the conditions.
            self_mask: optional (B, 1, 1, L) boolean "may attend" mask of the self-attention.

        Returns:
            (B, L, dim).
        """
        t_emb = self.time_embed(t_features)[:, None]  # (B, 1, D)
        context = self.norm(self.cond_embed(cond))  # (B, M, D)
        h = self.norm(x)
        guidance = self.cross_attn(h, context=context, rope=rope, attn_mask=cond_mask)  # (B, L, D)
        if self.condition_residual:
            x = x + guidance
            h = self.norm(x)
        shift1, scale1, gate1, shift2, scale2, gate2 = self._modulation(t_emb + guidance).chunk(6, dim=-1)
        # scale1/scale2 already include the +1 of x·(1 + scale) + shift (folded into the bias below).
        x = torch.addcmul(
            x, gate1, self.attention(torch.addcmul(shift1, h, scale1), rope=rope, attn_mask=self_mask)
        )
        return torch.addcmul(x, gate2, self.mlp(torch.addcmul(shift2, self.norm(x), scale2)))

    def _modulation(self, x: Tensor) -> Tensor:
        """``adaLN_modulation(x)`` with 1 added to the two scale chunks through the bias (saves a full pass)."""
        linear = self.adaLN_modulation[1]
        offset = torch.zeros(6, linear.bias.shape[0] // 6, dtype=linear.bias.dtype, device=linear.bias.device)
        offset[1] = offset[4] = 1.0  # chunks: shift1, scale1, gate1, shift2, scale2, gate2
        return F.linear(self.adaLN_modulation[0](x), linear.weight, linear.bias + offset.flatten())


class PixelDecoder(nn.Module):
    """Velocity network v(x_s, s, conditions) in pixel space (the official ``diff_decoder.net``)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        dim, patch = config.decoder_dim, config.decoder_patch_size
        self.dim = dim
        self.patch_size = patch
        self.condition_tokens = config.decoder_condition_tokens
        self.repa_layer = config.repa_layer
        self.repa_grid = config.repa_grid
        self.cond_mlp = nn.Linear(config.condition_dim, dim)
        self.norm = parameter_free_layer_norm(dim)
        self.conv_in = nn.Linear(3 * patch * patch, dim)
        self.conv_out = nn.Linear(dim, 3 * patch * patch)
        self.estimate_in = nn.Linear(3 * patch * patch, dim) if config.decoder_estimate_input else None
        self.pos_embed = None
        if config.decoder_position_embedding:
            self.pos_embed = nn.Parameter(torch.zeros(1, config.decoder_grid**2, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.blocks = nn.ModuleList(
            [
                SiTBlock(dim, config.head_dim, config.mlp_ratio, config.decoder_condition_residual)
                for _ in range(config.num_decoder_layers)
            ]
        )
        if config.has_repa_head:
            hidden = config.repa_hidden_dim
            self.repa_out = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Linear(hidden, config.repa_dim),
            )
        else:
            self.repa_out = None
        self.rope = RopeCache(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False

    def _repa(self, tokens: Tensor, grid_h: int, grid_w: int) -> Tensor:
        b, _, d = tokens.shape
        grid = tokens.transpose(1, 2).reshape(b, d, grid_h, grid_w)  # (B, D, gh, gw)
        kernel = grid_h // self.repa_grid
        if kernel > 1:
            grid = F.avg_pool2d(grid, kernel, kernel)
        return self.repa_out(grid.flatten(2).transpose(1, 2))  # (B, repa_grid², repa_dim)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        cond: Tensor,
        return_repa: bool = False,
        cond_mask: Tensor | None = None,
        estimate: Tensor | None = None,
    ) -> DecoderOutput:
        """Predict the velocity.

        Args:
            x_t: (B, 3, H, W) float noisy sample in scaled data units; H, W multiples of the patch size.
            t: (B,) float time in [0, 1] (already shifted; 0 = noise, 1 = data).
            cond: (B, M, condition_dim) conditions the step sees (one group, or a prefix of groups).
            return_repa: also compute the REPA head output (needs a REPA head).
            cond_mask: optional (B, M) boolean mask of the conditions each image may attend to (training with
                ``decoder_condition_context="prefix"``: the images of a batch are at different groups).
            estimate: (B, 3, H, W) image estimate from the same conditions; required with
                ``decoder_estimate_input``, refused without it.

        Returns:
            :class:`DecoderOutput`.
        """
        if return_repa and self.repa_out is None:
            raise ValueError(
                "this tokenizer has no REPA head (repa_layer=None); build it with repa_layer set"
            )
        if (estimate is None) != (self.estimate_in is None):
            raise ValueError(
                "pass estimate= exactly when the decoder was built with decoder_estimate_input=True "
                f"(it was built with {self.estimate_in is not None})"
            )
        b, _, h, w = x_t.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        cond = self.norm(self.cond_mlp(cond))  # (B, M, D)
        t_features = timestep_features(t.expand(b) if t.ndim == 0 else t, self.dim).to(x_t.dtype)
        num_extra = cond.shape[1] if self.condition_tokens else 0
        rope = self.rope(gh, gw, x_t.device, num_identity=num_extra)
        attn_mask = None if cond_mask is None else cond_mask[:, None, None, :]  # (B, 1, 1, M)
        self_mask = None
        if self.condition_tokens and cond_mask is not None:  # image tokens always; conditions where allowed
            grid = torch.ones(b, gh * gw, dtype=torch.bool, device=x_t.device)
            self_mask = torch.cat([grid, cond_mask], dim=1)[:, None, None, :]  # (B, 1, 1, L + M)
        tokens = self.conv_in(patchify(x_t, self.patch_size))  # (B, L, D), L = gh·gw
        if estimate is not None:
            tokens = tokens + self.estimate_in(patchify(estimate.to(tokens.dtype), self.patch_size))
        if self.pos_embed is not None:
            if tokens.shape[1] != self.pos_embed.shape[1]:
                raise ValueError(
                    f"decoder_position_embedding was built for {self.pos_embed.shape[1]} tokens, got a "
                    f"{gh}x{gw} grid; decode at the configured image_size"
                )
            tokens = tokens + self.pos_embed
        if self.condition_tokens:
            tokens = torch.cat([tokens, cond.to(tokens.dtype)], dim=1)  # (B, L + M, D)
        repa = None
        for index, block in enumerate(self.blocks):
            if return_repa and index == self.repa_layer:
                repa = self._repa(tokens[:, : gh * gw], gh, gw)
            tokens = run_block(self, block, tokens, cond, t_features, rope, attn_mask, self_mask)
        tokens = tokens[:, : gh * gw]
        velocity = unpatchify(self.conv_out(self.norm(tokens)), self.patch_size, gh, gw)  # (B, 3, H, W)
        return DecoderOutput(velocity=velocity, repa_features=repa)
