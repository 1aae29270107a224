"""Result records of :class:`dart.DARTModel` (named dataclasses, never positional tuples)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["DARTLosses", "DARTOutput"]


@dataclass
class DARTOutput:
    """Teacher-forced outputs, indexed by level (index t − 1 = level t).

    Attributes:
        hidden: (B, T, K, d) the backbone hidden states that predict each level's tokens.
        x0: (B, T, K, D) x̂_0 tokens of the regression head; ``None`` for DART-FM (its x̂_0 is sampled, see
            :meth:`DARTModel.sample_x0`).
    """

    hidden: Tensor
    x0: Tensor | None


@dataclass
class DARTLosses:
    """Losses of one training step.

    Attributes:
        total: scalar to backpropagate, mean over levels of ω_t · per-level loss.
        per_level: (T,) detached per-level loss (x̂_0-MSE, or flow-matching MSE for DART-FM), index t − 1 =
            level t: the key diagnostic (it should fall as t falls).
        weights: (T,) the ω_t used (mean 1).
        dropped: (B,) bool, which labels were replaced by the null class.
    """

    total: Tensor
    per_level: Tensor
    weights: Tensor
    dropped: Tensor
