"""The evaluation protocol of DESIGN §8, shared by ``dar eval`` and ``recipes/evaluate.py``.

Class-balanced labels (``per_class`` images of every class, class-major order), sampling with a fixed seed per
process (``seed + rank``), uint8 quantization by :func:`dar.metrics.to_uint8`, references given as a folder,
an npz (ADM reference batch or our own samples) or ``demo-test`` (the real animal-shape-mnist test split),
and one report: the metrics of :func:`dar.metrics.compute_generation_metrics` plus, where a demo-domain
classifier fits the images, the class accuracy of the samples.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dar.metrics import (
    GENERATION_METRICS,
    ClassifierFeatureExtractor,
    FeatureExtractor,
    FeatureStatistics,
    TorchmetricsInception,
    TorchScriptInception,
    compute_generation_metrics,
    load_images,
    to_uint8,
)

logger = logging.getLogger(__name__)

DEMO_REFERENCE = "demo-test"
FEATURE_KINDS: tuple[str, ...] = ("inception", "classifier")

__all__ = [
    "DEMO_REFERENCE",
    "FEATURE_KINDS",
    "Reference",
    "build_feature_extractor",
    "class_accuracy",
    "class_balanced_labels",
    "evaluate_samples",
    "format_results",
    "load_reference",
    "sample_images",
    "shard",
]


def class_balanced_labels(
    num_classes: int, per_class: int, classes: Sequence[int] | None = None
) -> list[int]:
    """``per_class`` copies of every class id, class-major: [0, 0, …, 1, 1, …]."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    classes = list(range(num_classes)) if classes is None else list(classes)
    if not classes:
        raise ValueError("no classes to sample: pass num_classes >= 1 or a non-empty classes list")
    return [c for c in classes for _ in range(per_class)]


def shard(items: Sequence, rank: int, world_size: int) -> tuple[int, Sequence]:
    """The contiguous share of ``items`` for process ``rank``: (start index, slice). Shares differ by ≤ 1."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return start, items[start : start + base + (rank < extra)]


def sample_images(
    pipe,
    labels: Sequence[int],
    *,
    batch_size: int = 50,
    generator: torch.Generator | None = None,
    **sampling,
) -> torch.Tensor:
    """Generate one image per label with a :class:`dar.DARPipeline`, in batches, as uint8.

    Args:
        pipe: the pipeline (on its device).
        labels: class ids; the images follow their order.
        batch_size: images per pipeline call. One generator runs through all batches, so seed and batch size
            together fix the samples.
        generator: a generator on ``pipe.device``.
        **sampling: ``cfg_scale``, ``temperature``, … as accepted by ``pipe(...)``.

    Returns:
        (N, 3, H, W) uint8 on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    chunks = []
    for start in range(0, len(labels), batch_size):
        batch = list(labels[start : start + batch_size])
        images = pipe(batch, generator=generator, output_type="pt", **sampling).images  # [0, 1]
        chunks.append(to_uint8(images * 2 - 1).cpu())
        logger.info("sampled %d / %d images", start + len(batch), len(labels))
    if not chunks:
        raise ValueError("labels is empty: nothing to sample")
    return torch.cat(chunks)


@dataclass
class Reference:
    """Reference images (uint8 (M, 3, H, W)) and/or precomputed ``mu``/``sigma`` statistics."""

    description: str
    images: torch.Tensor | None = None
    statistics: FeatureStatistics | None = None


def _demo_test_images() -> torch.Tensor:
    from dar.data import load_animal_shapes

    dataset = load_animal_shapes("test")
    pixels = np.stack([np.asarray(image.convert("L"), dtype=np.uint8) for image in dataset["image"]])
    return torch.from_numpy(pixels)[:, None].expand(-1, 3, -1, -1).contiguous()  # (N, 3, 32, 32), grey → RGB


DEMO_TRAIN_SAMPLES = "demo-train"


def load_samples(spec: str | os.PathLike, per_class: int = 100) -> tuple[torch.Tensor, list[int] | None]:
    """Existing images to evaluate instead of sampling: uint8 (N, 3, H, W) and their labels (None if unknown).

    ``spec`` is an npz written by ``--save-npz`` (``arr_0`` and ``labels``), a folder of images (no labels), or
    ``demo-train``: the first ``per_class`` real training silhouettes of every class (the real-data baseline of
    the demo table; the training and test splits are disjoint).
    """
    if str(spec) == DEMO_TRAIN_SAMPLES:
        from dar.data import load_animal_shapes

        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class must be a positive int, got {per_class!r}")
        dataset = load_animal_shapes("train")
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(dataset["label"]):
            by_class.setdefault(int(label), []).append(index)
        if min(len(v) for v in by_class.values()) < per_class:
            raise ValueError(f"the demo training split has fewer than {per_class} images in some class")
        labels = [label for label in sorted(by_class) for _ in range(per_class)]
        indices = [i for label in sorted(by_class) for i in by_class[label][:per_class]]
        pixels = np.stack([np.asarray(dataset[i]["image"].convert("L"), dtype=np.uint8) for i in indices])
        return torch.from_numpy(pixels)[:, None].expand(-1, 3, -1, -1).contiguous(), labels
    path = Path(spec)
    if not (path.is_dir() or (path.suffix == ".npz" and path.is_file())):
        raise FileNotFoundError(
            f"samples {spec!r} are not {DEMO_TRAIN_SAMPLES!r}, an image folder or an .npz file"
        )
    images, labels = load_images(path)
    return images, None if labels is None else [int(label) for label in labels]


def load_reference(spec: str | os.PathLike) -> Reference:
    """``demo-test``, a folder of PNG/JPEG images, or an npz with ``arr_0`` images and/or ``mu``/``sigma``."""
    if str(spec) == DEMO_REFERENCE:
        return Reference("animal-shape-mnist test split", images=_demo_test_images())
    path = Path(spec)
    if path.is_dir():
        return Reference(str(path), images=load_images(path)[0])
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.keys())
        images = load_images(path)[0] if "arr_0" in keys else None
        statistics = FeatureStatistics.from_npz(path) if {"mu", "sigma"} <= keys else None
        if images is None and statistics is None:
            raise ValueError(
                f"{path} holds neither arr_0 images nor mu/sigma statistics (keys: {sorted(keys)})"
            )
        return Reference(str(path), images=images, statistics=statistics)
    raise FileNotFoundError(
        f"reference {spec!r} is not {DEMO_REFERENCE!r}, an image folder or an existing .npz file"
    )


def build_feature_extractor(
    kind: str,
    *,
    inception_path: str | os.PathLike | None = None,
    classifier: torch.nn.Module | None = None,
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


def class_accuracy(
    classifier: torch.nn.Module, images: torch.Tensor, labels: Sequence[int], class_names: Sequence[str]
) -> dict:
    """Accuracy of ``classifier`` on uint8 images with their intended labels: overall and per class name."""
    from dar.classifier import per_class_accuracy

    labels = torch.as_tensor(list(labels))
    device = next(classifier.parameters()).device
    predictions = classifier.predict(images.to(device).float() / 127.5 - 1).cpu()
    per_class = per_class_accuracy(predictions, labels, len(class_names))
    return {
        "overall": (predictions == labels).float().mean().item(),
        "per_class": {name: acc for name, acc in zip(class_names, per_class) if not math.isnan(acc)},
    }


def evaluate_samples(
    images: torch.Tensor,
    labels: Sequence[int],
    reference: Reference,
    feature: FeatureExtractor,
    *,
    metrics: Sequence[str] | None = None,
    classifier: torch.nn.Module | None = None,
    class_names: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    **metric_kwargs,
) -> dict:
    """Metrics of uint8 samples against ``reference``, and their class accuracy when ``classifier`` fits.

    Args:
        metrics: a subset of ("fid", "is", "kid", "pr"); None picks every metric the extractor and the
            reference allow (IS needs logits; KID and PR need reference images).
        classifier: a :class:`dar.classifier.ShapeClassifier`; its accuracy is reported when its image size
            and class count match the samples.
        **metric_kwargs: passed to :func:`dar.metrics.compute_generation_metrics`.

    Returns:
        ``{"metrics": {...}, "class_accuracy": {...} | None, "reference": str}``.
    """
    if metrics is None:
        metrics = [m for m in GENERATION_METRICS if m != "is" or feature.has_logits]
        if reference.images is None:
            metrics = [m for m in metrics if m in ("fid", "is")]
    real = reference.images if reference.images is not None else reference.statistics
    if reference.images is None:
        logger.warning("FID against stored mu/sigma: valid only if they come from the same feature extractor")
    results = compute_generation_metrics(
        images, real, feature=feature, metrics=metrics, generator=generator, **metric_kwargs
    )
    accuracy = None
    if classifier is not None:
        config = classifier.config
        labels = list(labels)
        if tuple(images.shape[-2:]) != (config.image_size,) * 2 or max(labels) >= config.num_classes:
            logger.info("the classifier does not fit these samples: no class accuracy")
        else:
            names = list(class_names or [str(c) for c in range(config.num_classes)])
            accuracy = class_accuracy(classifier, images, labels, names[: config.num_classes])
    # JSON-safe: an undefined value (IS std of one split, ...) becomes None
    results = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in results.items()}
    return {"metrics": results, "class_accuracy": accuracy, "reference": reference.description}


def format_results(results: dict) -> str:
    """A short plain-text table of :func:`evaluate_samples`' output."""
    labels = {"fid": "FID", "is": "IS", "kid": "KID", "precision": "precision", "recall": "recall"}
    rows = [f"reference: {results['reference']}"]
    for key, label in labels.items():
        value = results["metrics"].get(key)
        if value is not None:
            std = results["metrics"].get(f"{key}_std")
            rows.append(f"  {label:<15}{value:10.4f}" + (f"  ± {std:.4f}" if std is not None else ""))
    accuracy = results.get("class_accuracy")
    if accuracy:
        rows.append(f"  {'class accuracy':<15}{accuracy['overall']:10.4f}")
        rows += [f"    {name:<13}{acc:10.4f}" for name, acc in accuracy["per_class"].items()]
    return "\n".join(rows)
