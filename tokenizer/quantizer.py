"""Cosine-similarity vector quantiser of the tokenizer, on top of ``vector_quantize_pytorch.VectorQuantize``.

Implements the quantisation of D-AR (Gao & Shou 2025) §3.1 as described in reference §2.5, with the library's
EMA codebook instead of the official learnable one (k-means init and dead-code replacement are options):

- latents are ℓ2-normalised *before* the library (this also sidesteps the library's masked-loss comparison
  against the raw input, see stack notes);
- the group mask (tokens that can influence the sampled decoder group) goes through the library's ``mask=``,
  so masked tokens neither contribute to the commitment loss nor update the codebook;
- nearest codes for inference are computed here by maximum cosine similarity against the row-normalised
  codebook, never through the library's forward, which would k-means-initialise or EMA-update the codebook;
- codes → vectors uses the library's lookup (its rows are kept unit-norm, as the official code uses them).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from tokenizer.config import TokenizerConfig

CODE_CHUNK_ROWS = 4096


def dead_code_kwargs(threshold: float) -> dict:
    """The ``VectorQuantize`` keyword for dead-code replacement below ``threshold`` (an EMA cluster size; 0 = off).

    vector-quantize-pytorch 1.34 replaced the absolute ``threshold_ema_dead_code`` by
    ``dead_code_threshold_ratio`` (a fraction of the mean cluster size) and converts the old keyword, with a
    warning on every construction, as threshold / codebook_size. Off, the new keyword is set to 0 where it exists
    (no warning; neither version replaces codes); on, the threshold goes through the old keyword, which 1.34
    converts (so it means a fraction of the mean cluster size there, not an absolute count).
    """
    params = inspect.signature(VectorQuantize.__init__).parameters
    if threshold == 0 and "dead_code_threshold_ratio" in params:
        return {"dead_code_threshold_ratio": 0.0}
    return {"threshold_ema_dead_code": threshold}


@dataclass
class QuantizerOutput:
    """Result of a training-time quantisation.

    Attributes:
        vectors: (B, N, codebook_dim) unit-norm code vectors with the gradient routed to the latents
            (straight-through or rotation trick); zero at masked positions.
        codes: (B, N) int64 code indices; −1 at masked positions.
        loss: scalar commitment loss (weighted), averaged over unmasked tokens; 0 in eval mode.
    """

    vectors: Tensor
    codes: Tensor
    loss: Tensor


class VectorQuantizer(nn.Module):
    """ℓ2-normalised VQ with an EMA codebook of ``codebook_size × codebook_dim`` (stored in ``vq._codebook.embed``)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.codebook_size = config.codebook_size
        self.vq = VectorQuantize(
            dim=config.codebook_dim,
            codebook_size=config.codebook_size,
            use_cosine_sim=True,
            commitment_weight=config.commitment_weight,
            decay=config.codebook_decay,
            kmeans_init=config.kmeans_init,
            **dead_code_kwargs(config.threshold_ema_dead_code),
            rotation_trick=config.rotation_trick,
            channel_last=True,
        )

    @property
    def codebook(self) -> Tensor:
        """(codebook_size, codebook_dim) codebook; unit-norm rows (an EMA buffer, not a parameter).

        The library keeps the rows ℓ2-normalised after every update (and the official-checkpoint converter
        normalises them once), so they are used as stored: normalising again would change them in the last bit.
        """
        return self.vq.codebook

    @property
    def is_initialised(self) -> bool:
        """False only while a k-means-initialised codebook is waiting for its first training batch."""
        return bool(self.vq._codebook.initted)

    def quantize(self, latents: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Training-time quantisation through the library (EMA update and loss in training mode).

        Args:
            latents: (B, N, codebook_dim) float latents from the encoder (any norm).
            mask: (B, N) bool, True where a token counts (loss and codebook update); None = all.

        Returns:
            :class:`QuantizerOutput`.
        """
        if not self.training and not self.is_initialised:
            raise RuntimeError(
                "the codebook is not initialised yet (kmeans_init=True): run a training-mode batch first; "
                "an eval-mode call would silently k-means-initialise it from this batch"
            )
        vectors, codes, loss = self.vq(F.normalize(latents, dim=-1), mask=mask)
        return QuantizerOutput(vectors=vectors, codes=codes, loss=loss)

    @torch.no_grad()
    def codes(self, latents: Tensor) -> Tensor:
        """Nearest codebook entries (maximum cosine similarity); never changes or initialises the codebook.

        Args:
            latents: (B, N, codebook_dim) float latents.

        Returns:
            (B, N) int64 codes in [0, codebook_size).
        """
        if not self.is_initialised:
            raise RuntimeError(
                "the codebook is not initialised yet (kmeans_init=True): train at least one step before encoding"
            )
        z = F.normalize(latents.float(), dim=-1).flatten(0, -2)  # (B·N, d)
        codebook = self.codebook.float()
        codebook_sq = codebook.pow(2).sum(-1)
        codes = []
        for chunk in z.split(CODE_CHUNK_ROWS):  # bounds the (rows, K) distance matrix
            # The official squared-distance expression, so that near-ties resolve as in the official code.
            distance = chunk.pow(2).sum(-1, keepdim=True) + codebook_sq - 2 * chunk @ codebook.t()
            codes.append(distance.argmin(dim=-1))
        return torch.cat(codes).view(latents.shape[:-1])

    def lookup(self, codes: Tensor) -> Tensor:
        """Codes → unit-norm code vectors through the library's lookup (rows of :attr:`codebook`).

        Args:
            codes: (B, n) int64 in [0, codebook_size).

        Returns:
            (B, n, codebook_dim) float vectors.
        """
        return self.vq.get_codes_from_indices(codes)
