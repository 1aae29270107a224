"""DART's training step as a module: what a recipe wraps with DDP / FSDP / ``accelerator.prepare``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DARTLossModule"]


class DARTLossModule(nn.Module):
    """:meth:`dart.DARTModel.training_losses` as a module's ``forward``, with the loss of every level as a term.

    Args:
        model: the :class:`dart.DARTModel` being trained.
        encode: optional ``images -> model-space samples`` (a VAE's scaled latents; kept out of the module tree,
            so it is neither trained nor checkpointed); None for a pixel-space model.
    """

    def __init__(self, model: nn.Module, encode=None) -> None:
        super().__init__()
        self.model = model
        self.frozen = (encode,)  # a tuple: not registered as a submodule

    def forward(
        self, images: Tensor, class_labels: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """(B, 3, H, W) images in [-1, 1] and (B,) labels → ``{"loss": …, "level_1": …, …, "level_T": …}``."""
        (encode,) = self.frozen
        samples = images if encode is None else encode(images)
        losses = self.model.training_losses(samples, class_labels, generator)
        terms = {"loss": losses.total}
        terms.update({f"level_{t + 1}": value for t, value in enumerate(losses.per_level)})
        return terms
