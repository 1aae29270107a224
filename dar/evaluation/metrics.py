"""Image-generation metrics: FID, IS, KID, precision/recall and reconstruction PSNR/SSIM/rFID (DESIGN §8).

Metrics take **uint8 images (N, 3, H, W)**, the pixels that are written to disk (:func:`dar.images.to_uint8`),
or their :class:`~dar.evaluation.features.ImageFeatures`, computed once per image set; FID, KID and IS are
computed by torchmetrics on those features, precision/recall by the k-NN manifold estimate of Kynkäänniemi
et al. (2019).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dar.evaluation import GENERATION_METRICS, MIN_RELIABLE_SAMPLES
from dar.evaluation.features import ImageFeatures, device_of, extract_features
from dar.images import check_uint8, to_uint8

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureStatistics",
    "compute_generation_metrics",
    "frechet_distance",
    "precision_recall",
    "reconstruction_metrics",
]


@dataclass
class FeatureStatistics:
    """Gaussian statistics of a feature set, for FID against a stored reference: ``mu`` (D,), ``sigma`` (D, D)."""

    mu: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def from_features(cls, features: torch.Tensor) -> FeatureStatistics:
        features = features.double()
        if len(features) < 2:
            raise ValueError("FID statistics need at least 2 samples")
        return cls(mu=features.mean(0), sigma=torch.cov(features.T))

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> FeatureStatistics:
        """Read ``mu`` and ``sigma`` (ADM reference batches, pytorch-fid/fid-helper statistics files)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no statistics file at {path}")
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise ValueError(f"{path} has no mu/sigma arrays (keys: {list(data.keys())})")
            mu, sigma = torch.from_numpy(data["mu"]).double(), torch.from_numpy(data["sigma"]).double()
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise ValueError(
                f"{path}: mu must be (D,) and sigma (D, D), got {tuple(mu.shape)}, {tuple(sigma.shape)}"
            )
        return cls(mu=mu, sigma=sigma)

    def save_npz(self, path: str | os.PathLike) -> Path:
        np.savez(path, mu=self.mu.numpy(), sigma=self.sigma.numpy())
        return Path(path)


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½), with the trace of the root from eigenvalues (as torchmetrics)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(
            f"statistics of {a.mu.shape[0]} and {b.mu.shape[0]} features: compute both with one extractor"
        )
    root_trace = torch.linalg.eigvals(a.sigma.double() @ b.sigma.double()).sqrt().real.sum()
    distance = (a.mu - b.mu).double().square().sum() + a.sigma.trace() + b.sigma.trace() - 2 * root_trace
    return float(distance)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, batch_size: int = 1000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds, as the ADM evaluator.

    Each set's manifold is the union of balls around its points whose radius is the distance to the k-th
    nearest other point. Precision: the share of fake points inside the real manifold; recall: the share of
    real points inside the fake manifold.

    Args:
        real, fake: (N, D) and (M, D) features, each with more than ``k`` points.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features, got {tuple(real.shape)}, {tuple(fake.shape)}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(
            f"precision/recall with k={k} need more than {k} samples per set, got {len(real)}, {len(fake)}"
        )
    real, fake = real.float(), fake.float()

    def radii(points):  # (N,): the (k+1)-th smallest distance, as each point is at distance 0 from itself
        return torch.cat(
            [torch.cdist(c, points).kthvalue(k + 1, dim=1).values for c in points.split(batch_size)]
        )

    def inside(manifold, manifold_radii, queries):
        hits = [(torch.cdist(c, manifold) <= manifold_radii).any(dim=1) for c in queries.split(batch_size)]
        return torch.cat(hits).float().mean().item()

    return inside(real, radii(real), fake), inside(fake, radii(fake), real)


class _Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics' FID/KID/IS run on features computed once."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _local_metric(metric_class, **kwargs):
    """A torchmetrics metric that computes on this process's features only.

    Under ``accelerate launch`` torchmetrics would otherwise gather its state over the process group in
    ``compute()`` and hang or fail when (as in ``recipes/evaluate.py``) only the main process measures. The
    warning that KID/IS buffer their features is silenced: they get precomputed features, by design.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")
        return metric_class(sync_on_compute=False, **kwargs)


def _seeded_compute(metric, generator: torch.Generator | None):
    """torchmetrics draws KID subsets and the IS shuffle from the global RNG: seed it from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return metric.compute()


def _as_features(images, feature, batch_size, name) -> ImageFeatures:
    if isinstance(images, ImageFeatures):
        return images
    if feature is None:
        raise ValueError(f"{name} is an image tensor: pass feature=<extractor> to compute its features")
    return extract_features(feature, images, batch_size)


def compute_generation_metrics(
    fake: torch.Tensor | ImageFeatures,
    real: torch.Tensor | ImageFeatures | FeatureStatistics | None,
    *,
    feature: nn.Module | None = None,
    metrics: Sequence[str] = GENERATION_METRICS,
    batch_size: int = 250,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    pr_k: int = 3,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """FID, Inception Score, KID and precision/recall of generated images against a reference.

    Args:
        fake: generated images, uint8 (N, 3, H, W), or their :class:`ImageFeatures`.
        real: reference images, uint8 (M, 3, H, W) of the same H, W, or their features, or
            :class:`FeatureStatistics` (FID only; must come from the same extractor), or None (IS only).
        feature: the extractor for image inputs (:class:`FeatureExtractor`; IS needs one with logits).
        metrics: any of "fid", "is", "kid", "pr".
        kid_subset_size: clamped to the smaller set size (logged), as KID cannot draw larger subsets.
        is_splits: IS splits, clamped to the number of samples.
        pr_k: neighbourhood size of the precision/recall manifolds (3 in the paper and the ADM evaluator).
        generator: seeds the random KID subsets and the IS shuffle.

    Returns:
        ``fid``, ``is``/``is_std``, ``kid``/``kid_std``, ``precision``/``recall`` for the requested metrics,
        plus ``num_fake`` and ``num_real``, and ``warning`` (a string) when there are fewer than
        :data:`~dar.evaluation.MIN_RELIABLE_SAMPLES` samples, where these metrics are strongly biased.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    unknown = set(metrics) - set(GENERATION_METRICS)
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {GENERATION_METRICS}, got {list(metrics)}")
    if isinstance(fake, torch.Tensor):
        check_uint8(fake, "fake")
    if isinstance(real, torch.Tensor):
        check_uint8(real, "real")
        if isinstance(fake, torch.Tensor) and fake.shape[-2:] != real.shape[-2:]:
            raise ValueError(
                f"fake images are {tuple(fake.shape[-2:])} px but real images are {tuple(real.shape[-2:])} px: "
                "evaluate at one resolution (resize or centre-crop the reference to the generator's size)"
            )
    needs_real = {"fid", "kid", "pr"} & set(metrics)
    if real is None and needs_real:
        raise ValueError(f"{sorted(needs_real)} need reference images: pass real=, or metrics=('is',)")
    if isinstance(real, FeatureStatistics) and {"kid", "pr"} & set(metrics):
        raise ValueError("kid and pr need reference images or features, not mu/sigma statistics only")

    fake_set = _as_features(fake, feature, batch_size, "fake")
    results: dict[str, float | str] = {"num_fake": len(fake_set)}
    if len(fake_set) < MIN_RELIABLE_SAMPLES:
        results["warning"] = (
            f"computed on {len(fake_set)} samples: below {MIN_RELIABLE_SAMPLES} FID/KID/IS/precision/recall are "
            "strongly biased; compare only figures computed on the same number of samples"
        )
        logger.warning("%s", results["warning"])
    if needs_real and not isinstance(real, FeatureStatistics):
        real_set = _as_features(real, feature, batch_size, "real")
        results["num_real"] = len(real_set)
        if real_set.features.shape[1] != fake_set.features.shape[1]:
            raise ValueError("fake and real features differ in size: compute both with one extractor")
        smallest = min(len(fake_set), len(real_set))
        if smallest < 2:
            raise ValueError(f"fid/kid/pr need at least 2 fake and 2 real samples, got {smallest}")
    num_features = fake_set.features.shape[1]

    if "fid" in metrics:
        if isinstance(real, FeatureStatistics):
            results["num_real"] = None
            results["fid"] = frechet_distance(FeatureStatistics.from_features(fake_set.features), real)
        else:
            fid = _local_metric(FrechetInceptionDistance, feature=_Precomputed(num_features))
            fid.update(real_set.features.double(), real=True)
            fid.update(fake_set.features.double(), real=False)
            results["fid"] = float(fid.compute())
    if "kid" in metrics:
        subset_size = min(kid_subset_size, smallest)
        if subset_size < kid_subset_size:
            logger.info("KID subset size %d > %d samples: using %d", kid_subset_size, smallest, subset_size)
        kid = _local_metric(
            KernelInceptionDistance,
            feature=_Precomputed(num_features),
            subsets=kid_subsets,
            subset_size=subset_size,
        )
        kid.update(real_set.features.double(), real=True)  # cubic kernel of raw features: keep float64
        kid.update(fake_set.features.double(), real=False)
        mean, std = _seeded_compute(kid, generator)
        results["kid"], results["kid_std"] = float(mean), float(std)
    if "is" in metrics:
        if fake_set.logits is None:
            raise ValueError(
                "the Inception Score needs class logits, which this extractor does not give (a TorchScript "
                "pool-feature network has no classifier head): drop 'is' from metrics"
            )
        inception_score = _local_metric(
            InceptionScore,
            feature=_Precomputed(fake_set.logits.shape[1]),
            splits=min(is_splits, len(fake_set)),
        )
        inception_score.update(fake_set.logits.double())
        mean, std = _seeded_compute(inception_score, generator)
        results["is"], results["is_std"] = float(mean), float(std)
    if "pr" in metrics:
        precision, recall = precision_recall(real_set.features, fake_set.features, k=pr_k)
        results["precision"], results["recall"] = precision, recall
    return results


def reconstruction_metrics(
    tokenizer: nn.Module,
    images: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    feature: nn.Module | None = None,
    batch_size: int = 64,
    return_reconstructions: bool = False,
) -> dict[str, float] | tuple[dict[str, float], torch.Tensor]:
    """Encode → decode ``images`` with a :class:`tokenizer.DARTokenizer` and compare with the originals.

    Both sides are quantized with :func:`to_uint8` (as saved images would be) and scaled to [0, 1], so PSNR and
    SSIM use ``data_range=1.0``; PSNR is averaged over images (inf for an identical pair). SSIM uses the usual
    11-px Gaussian window, or 3 px for images under 64 px.

    Args:
        tokenizer: has ``encode(images) -> codes`` and ``decode(codes, generator=) -> images``.
        images: (N, 3, H, W) float in [-1, 1].
        generator: drives the decoder noise.
        feature: an extractor; when given, ``rfid`` (FID of reconstructions vs originals) is added.
        return_reconstructions: also return the (N, 3, H, W) uint8 reconstructions.

    Returns:
        ``psnr``, ``ssim``, ``num_images`` and, with ``feature``, ``rfid`` (and the reconstructions).
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    original = to_uint8(images).cpu()
    device = device_of(tokenizer)
    with torch.no_grad():
        reconstructed = torch.cat(
            [
                # decoder overshoot is clamped, as for generated samples (DiT/ADM convention)
                to_uint8(
                    tokenizer.decode(tokenizer.encode(chunk.to(device)), generator=generator)
                    .float()
                    .clamp(-1, 1)
                ).cpu()
                for chunk in images.split(batch_size)
            ]
        )
    target, preds = original.double() / 255, reconstructed.double() / 255  # [0, 1] → data_range=1.0
    psnr = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))  # (N,)
    kernel_size = 3 if min(target.shape[-2:]) < 64 else 11
    ssim = structural_similarity_index_measure(preds, target, data_range=1.0, kernel_size=kernel_size)
    results = {"psnr": float(psnr.mean()), "ssim": float(ssim), "num_images": len(original)}
    if feature is not None:
        results["rfid"] = compute_generation_metrics(
            reconstructed, original, feature=feature, metrics=("fid",), batch_size=batch_size
        )["fid"]
    return (results, reconstructed) if return_reconstructions else results
