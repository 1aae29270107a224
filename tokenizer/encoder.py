"""Image encoder of the sequential diffusion tokenizer: patches + learned low-rank queries → code latents.

Implements D-AR (Gao & Shou 2025) §3.1 as described in reference §2.4: a patch embedding, a parameter-free
LayerNorm, N learned queries (a low-rank table row projected to the encoder width), masked gated transformer
blocks with 2-D RoPE on the patches (identity rotation for the queries), and a bias-free projection of the
query outputs to the code dimension. The attention mask lets patches see all patches and query i see all
patches and queries 0…i, so the latent of query i never depends on later queries.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenizer.config import TokenizerConfig
from tokenizer.layers import RopeCache, TransformerBlock, parameter_free_layer_norm, patchify, run_block


def encoder_attention_mask(num_patches: int, num_queries: int, device: torch.device | None = None) -> Tensor:
    """Boolean "may attend" mask over [patches ; queries]: allowed(a, b) = b < P or b ≤ a.

    Args:
        num_patches: P, patch tokens first in the sequence.
        num_queries: N, query tokens after the patches.
        device: where to build the mask.

    Returns:
        (P + N, P + N) bool tensor, True where row a may attend to column b.
    """
    total = num_patches + num_queries
    index = torch.arange(total, device=device)
    return (index[None, :] < num_patches) | (index[None, :] <= index[:, None])


class TokenEncoder(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] → unnormalised code latents (B, N, codebook_dim)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        dim, patch = config.encoder_dim, config.encoder_patch_size
        self.patch_size = patch
        self.num_queries = config.num_tokens
        self.patch_embed = nn.Linear(3 * patch * patch, dim)
        self.norm = parameter_free_layer_norm(dim)
        self.query_embedding = nn.Embedding(config.position_table_size, config.query_rank)
        nn.init.trunc_normal_(self.query_embedding.weight, std=1.0)
        self.query_linear = nn.Linear(config.query_rank, dim)
        self.layers = nn.ModuleList(
            [
                TransformerBlock(dim, config.head_dim, config.mlp_ratio)
                for _ in range(config.num_encoder_layers)
            ]
        )
        self.quant_in = nn.Linear(dim, config.codebook_dim, bias=False)
        self.rope = RopeCache(config.head_dim, config.rope_theta)
        self._masks: dict[tuple[int, str], Tensor] = {}
        self.gradient_checkpointing = False

    def _mask(self, num_patches: int, device: torch.device) -> Tensor:
        key = (num_patches, str(device))
        if key not in self._masks:
            self._masks[key] = encoder_attention_mask(num_patches, self.num_queries, device)
        return self._masks[key]

    def query_tokens(self) -> Tensor:
        """The N learned queries, (N, encoder_dim): Linear(rank → dim) of the first N table rows."""
        return self.query_linear(self.query_embedding.weight[: self.num_queries])

    def forward(self, images: Tensor) -> Tensor:
        """Encode.

        Args:
            images: (B, 3, H, W) float in [-1, 1]; H, W multiples of the encoder patch size.

        Returns:
            (B, N, codebook_dim) latents before ℓ2 normalisation; latent i depends on the image and on
            queries 0…i only.
        """
        b, _, h, w = images.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        patches = self.norm(self.patch_embed(patchify(images, self.patch_size)))  # (B, P, D), P = gh·gw
        queries = self.query_tokens().to(patches.dtype).expand(b, -1, -1)  # (B, N, D)
        tokens = torch.cat([patches, queries], dim=1)  # (B, P + N, D)
        rope = self.rope(gh, gw, images.device, num_identity=self.num_queries)
        mask = self._mask(gh * gw, images.device)
        for layer in self.layers:
            tokens = run_block(self, layer, tokens, rope, mask)
        queries = self.norm(tokens[:, gh * gw :])  # (B, N, D)
        return self.quant_in(queries)
