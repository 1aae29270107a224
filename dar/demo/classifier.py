"""A small CNN classifier for the demo domain (32×32 animal silhouettes).

It judges the shipped demo models: the accuracy of its predictions on generated images says whether class k
produces animal k, and its penultimate features give a demo-domain FID (the ImageNet Inception network knows
nothing of 32-px silhouettes; :class:`dar.evaluation.features.ClassifierFeatureExtractor`). Trained by
``recipes/train_classifier.py`` on the real training split; its accuracy on the real test split is stored
beside its weights.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

logger = logging.getLogger(__name__)


class ShapeClassifier(ModelMixin, ConfigMixin):
    """Three conv stages (32→16→8→4 px) and a linear head.

    Args:
        num_classes: number of classes.
        image_size: input side in pixels (a multiple of 8).
        width: channels of the first stage (doubled at each stage).
        num_features: size of the feature vector before the head (used for the demo-domain FID).
    """

    @register_to_config
    def __init__(self, num_classes: int = 10, image_size: int = 32, width: int = 32, num_features: int = 128):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        layers, channels = [], 3
        for stage in range(3):
            out = width * 2**stage
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.to_features = nn.Linear(channels * (image_size // 8) ** 2, num_features)
        self.head = nn.Linear(num_features, num_classes)

    def _check(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"expected images of shape (B, 3, {size}, {size}), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [-1, 1], got dtype {images.dtype}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [-1, 1] → (B, num_features) float."""
        self._check(images)
        return F.relu(self.to_features(self.body(images).flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [-1, 1] → (B, num_classes) logits."""
        return self.head(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(B, 3, S, S) float in [-1, 1] → (B,) int64 predicted classes (eval mode, batched)."""
        was_training = self.training
        self.eval()
        preds = torch.cat([self(chunk).argmax(-1) for chunk in images.split(batch_size)])
        self.train(was_training)
        return preds


def shift_augment(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels (zero = black padding), one per image."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=generator)
    return torch.stack(
        [padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())]
    )


def train_classifier(
    model: ShapeClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 2e-3,
    max_shift: int = 2,
    weight_decay: float = 0.01,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train in place with AdamW + cosine decay; returns the mean loss of every epoch.

    Args:
        model: the classifier.
        images: (N, 3, S, S) float in [-1, 1].
        labels: (N,) int64.
        generator: drives shuffling and augmentation.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for batch in order.split(batch_size):
            x = shift_augment(images[batch], max_shift, generator)
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        history.append(total / len(images))
        logger.info("epoch %d: loss %.4f", epoch, history[-1])
    model.eval()
    return history


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Fraction of correct predictions for every class (NaN for a class with no samples)."""
    return [
        (predictions[labels == c] == c).float().mean().item() if (labels == c).any() else float("nan")
        for c in range(num_classes)
    ]
