"""Training losses of the sequential diffusion tokenizer.

Implements the objective of D-AR (Gao & Shou 2025) §3.3 as described in reference §3: the flow-matching loss
(mean squared velocity error divided by data_scale²), the group-masked VQ commitment loss of the library (the
codebook itself follows an EMA), and two optional, injected terms — a perceptual loss (LPIPS-like callable,
weight 0.5 in the paper) between the input and the one-jump clean estimate, and REPA (1 − cosine similarity per
token between the decoder's REPA head and frozen features such as DINOv2 patch tokens, weight 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PerceptualLoss = Callable[[Tensor, Tensor], Tensor]
"""(images, reconstructions), both (B, 3, H, W) in [-1, 1] → scalar or per-sample loss."""

RepaTarget = Callable[[Tensor], Tensor]
"""images (B, 3, H, W) in [-1, 1] → target features (B, repa_grid², repa_dim)."""


@dataclass
class TokenizerLosses:
    """Loss terms of one training step; backpropagate :attr:`total`.

    Attributes:
        flow: scalar flow-matching loss (already divided by data_scale²).
        vq: scalar weighted commitment loss over the unmasked tokens (0 in eval mode).
        perceptual: scalar perceptual loss, or None when no perceptual loss was given.
        repa: scalar REPA loss (mean of 1 − cosine), or None when no REPA target was given.
        perceptual_weight: weight of ``perceptual`` in the total.
        repa_weight: weight of ``repa`` in the total.
        regression: scalar MSE (image units) of the auxiliary regressor, or None when it is off.
        regression_weight: its weight in the total.
        groups: (B,) int64 condition group sampled for each image.
    """

    flow: Tensor
    vq: Tensor
    perceptual: Tensor | None = None
    repa: Tensor | None = None
    perceptual_weight: float = 0.0
    repa_weight: float = 0.0
    regression: Tensor | None = None
    regression_weight: float = 0.0
    groups: Tensor | None = None

    @property
    def total(self) -> Tensor:
        """flow + vq + the weighted perceptual, REPA and regression terms (absent terms count 0)."""
        total = self.flow + self.vq
        if self.perceptual is not None:
            total = total + self.perceptual_weight * self.perceptual
        if self.repa is not None:
            total = total + self.repa_weight * self.repa
        if self.regression is not None:
            total = total + self.regression_weight * self.regression
        return total

    def terms(self) -> dict[str, Tensor]:
        """Scalar tensors for logging: ``loss`` (the total) and every present term (not detached)."""
        out = {"loss": self.total, "flow": self.flow, "vq": self.vq}
        if self.perceptual is not None:
            out["perceptual"] = self.perceptual
        if self.repa is not None:
            out["repa"] = self.repa
        if self.regression is not None:
            out["regression"] = self.regression
        return out


def flow_matching_loss(predicted: Tensor, target: Tensor, data_scale: float) -> Tensor:
    """Mean squared error over every element, divided by data_scale² (so it is measured in image units).

    Args:
        predicted: (B, 3, H, W) predicted velocity.
        target: (B, 3, H, W) target velocity x₁ − x₀.
        data_scale: the data multiplier (0.6 in the paper).

    Returns:
        Scalar tensor.
    """
    return F.mse_loss(predicted, target) / (data_scale**2)


def repa_loss(features: Tensor, target: Tensor) -> Tensor:
    """REPA alignment loss: mean over tokens of 1 − cos(features, target).

    Args:
        features: (B, M, D) REPA head output.
        target: (B, M, D) frozen target features.

    Returns:
        Scalar tensor in [0, 2].
    """
    if features.shape != target.shape:
        raise ValueError(
            f"REPA target features have shape {tuple(target.shape)} but the REPA head gives {tuple(features.shape)}; "
            "match repa_grid/repa_dim of the tokenizer to the target model's token grid and width"
        )
    return (1.0 - F.cosine_similarity(features, target.to(features.dtype), dim=-1)).mean()


class Dinov2Target(nn.Module):
    """Frozen REPA target from a ``transformers`` DINOv2 model: normalised patch tokens of the clean image.

    Preprocessing follows the official code: [-1, 1] → [0, 1] → ImageNet mean/std → bicubic resize to
    ``grid × patch_size`` pixels (224 for DINOv2-B/14 and a 16 × 16 grid); the output drops the CLS and register
    tokens of ``last_hidden_state`` (which is after the final LayerNorm).

    Args:
        model: a ``transformers.Dinov2Model`` (or any model with ``config.patch_size`` whose output has
            ``last_hidden_state``), e.g. ``Dinov2Model.from_pretrained("facebook/dinov2-base")``.
        grid: side of the token grid to produce; must equal the tokenizer's ``repa_grid``.
    """

    def __init__(self, model: nn.Module, grid: int = 16) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.resolution = grid * int(model.config.patch_size)
        self.num_prefix_tokens = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> Dinov2Target:
        """Stays in eval mode: the target network is frozen."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images in [-1, 1] → (B, grid², hidden_size) patch features."""
        x = ((images.float() + 1.0) / 2.0 - self.mean) / self.std
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic")
        return self.model(pixel_values=x).last_hidden_state[:, self.num_prefix_tokens :]


def frozen_loss_models(
    tokenizer: nn.Module, *, perceptual: str = "none", repa_model: str | None = None
) -> tuple[nn.Module | None, nn.Module | None]:
    """The frozen networks of the optional loss terms, on the CPU: (LPIPS or None, DINOv2 REPA target or None).

    Args:
        tokenizer: the tokenizer being trained (its REPA head and grid).
        perceptual: ``"lpips"`` (torchmetrics' VGG LPIPS; needs torchvision) or ``"none"``.
        repa_model: a DINOv2 folder or Hub id for the REPA target, or None.
    """
    lpips = repa = None
    if perceptual == "lpips":
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
        except ImportError as err:
            raise ImportError(
                "loss.perceptual=lpips needs torchvision; install it or set loss.perceptual=none"
            ) from err
        lpips = (
            LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=False)
            .eval()
            .requires_grad_(False)
        )
    elif perceptual != "none":
        raise ValueError(f"perceptual must be 'lpips' or 'none', got {perceptual!r}")
    if repa_model is not None:
        from transformers import AutoModel

        if not tokenizer.config.has_repa_head:
            raise ValueError(
                "loss.repa_model is set but the tokenizer has no REPA head (set model.overrides.repa_layer)"
            )
        repa = Dinov2Target(AutoModel.from_pretrained(repa_model), grid=tokenizer.config.repa_grid)
    return lpips, repa


class TokenizerLossModule(nn.Module):
    """``DARTokenizer.training_losses`` as a module's ``forward``, so DDP / FSDP / autocast wrappers see it.

    The frozen perceptual and REPA networks are kept out of the module tree (not trained, not checkpointed).

    Args:
        tokenizer: the :class:`tokenizer.DARTokenizer` being trained.
        perceptual_loss: optional ``(images, reconstructions) -> loss`` (e.g. LPIPS).
        perceptual_weight: its weight in the total.
        repa_target: optional frozen feature network for REPA (e.g. :class:`Dinov2Target`).
        repa_weight: its weight in the total.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        *,
        perceptual_loss: PerceptualLoss | None = None,
        perceptual_weight: float = 0.5,
        repa_target: RepaTarget | None = None,
        repa_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.frozen = (perceptual_loss, repa_target)  # a tuple: not registered as submodules
        self.weights = (perceptual_weight, repa_weight)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """(B, 3, H, W) images in [-1, 1] → ``{"loss": total, "flow": …, "vq": …, …}`` scalar tensors."""
        perceptual, repa = self.frozen
        return self.tokenizer.training_losses(
            images,
            generator,
            perceptual_loss=perceptual,
            perceptual_weight=self.weights[0],
            repa_target=repa,
            repa_weight=self.weights[1],
        ).terms()
