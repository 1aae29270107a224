"""Causal condition network: code vectors → per-token conditions for the pixel decoder.

Implements the "decoder layers" of D-AR (Gao & Shou 2025) §3.1 as described in reference §2.6: a bias-free
projection of the (unit-norm) code vectors, a learned position table (first n rows), causal gated transformer
blocks without RoPE, and a parameter-free LayerNorm. Because attention is causal, the conditions of a prefix
of codes equal the matching prefix of the conditions of the full sequence; unlike the official code this module
accepts any prefix length n ≤ N, which is what streaming needs.
"""

from __future__ import annotations

from torch import Tensor, nn

from tokenizer.config import TokenizerConfig
from tokenizer.layers import TransformerBlock, parameter_free_layer_norm, run_block


class ConditionNetwork(nn.Module):
    """(B, n, codebook_dim) unit-norm code vectors → (B, n, condition_dim) conditions, causally."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        dim = config.condition_dim
        self.num_tokens = config.num_tokens
        self.quant_out = nn.Linear(config.codebook_dim, dim, bias=False)
        self.position_embedding = nn.Embedding(config.position_table_size, dim)
        nn.init.trunc_normal_(self.position_embedding.weight, std=0.02)
        self.layers = nn.ModuleList(
            [
                TransformerBlock(dim, config.head_dim, config.mlp_ratio)
                for _ in range(config.num_condition_layers)
            ]
        )
        self.norm = parameter_free_layer_norm(dim)
        self.gradient_checkpointing = False

    def forward(self, code_vectors: Tensor) -> Tensor:
        """Compute conditions.

        Args:
            code_vectors: (B, n, codebook_dim) float, 1 ≤ n ≤ num_tokens, the vectors of codes 0…n−1.

        Returns:
            (B, n, condition_dim); row i depends on code vectors 0…i only.
        """
        n = code_vectors.shape[1]
        if not 1 <= n <= self.num_tokens:
            raise ValueError(f"expected between 1 and {self.num_tokens} code vectors, got {n}")
        tokens = self.quant_out(code_vectors) + self.position_embedding.weight[:n]  # (B, n, D)
        for layer in self.layers:
            tokens = run_block(self, layer, tokens, None, None, True)
        return self.norm(tokens)
