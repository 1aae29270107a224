"""The evaluation protocol of DESIGN §8, shared by ``dar eval`` and ``recipes/evaluate.py``.

Class-balanced labels (``per_class`` images of every class, class-major order), sampling with a fixed seed per
process (``seed + rank``), uint8 quantization by :func:`dar.images.to_uint8`, references given as a folder,
an npz (ADM reference batch or our own samples) or ``demo-test`` (the real animal-shape-mnist test split),
and one report: the metrics of :func:`dar.evaluation.metrics.compute_generation_metrics` plus, where a
demo-domain classifier fits the images, the class accuracy of the samples. :func:`build_judges` loads the
reference and the feature network first, so their errors come before minutes of sampling.
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

from dar.evaluation import DEMO_REFERENCE, DEMO_TRAIN_SAMPLES, GENERATION_METRICS
from dar.evaluation.features import FeatureExtractor, build_feature_extractor
from dar.evaluation.metrics import FeatureStatistics, compute_generation_metrics
from dar.images import from_uint8, load_images, to_uint8

logger = logging.getLogger(__name__)

DEMO_TEST_DESCRIPTION = "animal-shape-mnist test split"

__all__ = [
    "Judges",
    "Reference",
    "build_judges",
    "class_accuracy",
    "class_balanced_labels",
    "evaluate_samples",
    "format_results",
    "load_reference",
    "load_samples",
    "run_evaluation",
    "sample_images",
    "sample_names",
    "shard",
]


def class_balanced_labels(
    num_classes: int, per_class: int, classes: Sequence[int] | None = None
) -> list[int]:
    """``per_class`` copies of every class id, class-major: [0, 0, …, 1, 1, …]."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
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
    pipe, labels: Sequence[int], *, batch_size: int = 50, generator: torch.Generator | None = None, **sampling
) -> torch.Tensor:
    """Generate one image per label with a pipeline (``DARPipeline`` or ``DARTPipeline``), in batches, as uint8.

    Args:
        pipe: the pipeline (on its device).
        labels: class ids; the images follow their order.
        batch_size: images per pipeline call. One generator runs through all batches, so seed and batch size
            together fix the samples.
        generator: a generator on the pipeline's device.
        **sampling: ``cfg_scale``, ``temperature``, … as accepted by ``pipe(...)``.

    Returns:
        (N, 3, H, W) uint8 on the CPU.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not len(labels):
        raise ValueError("labels is empty: nothing to sample")
    chunks = []
    for start in range(0, len(labels), batch_size):
        batch = list(labels[start : start + batch_size])
        images = pipe(batch, generator=generator, output_type="pt", **sampling).images  # [0, 1]
        chunks.append(to_uint8(images * 2 - 1).cpu())
        logger.info("sampled %d / %d images", start + len(batch), len(labels))
    return torch.cat(chunks)


@dataclass
class Reference:
    """Reference images (uint8 (M, 3, H, W)) and/or precomputed ``mu``/``sigma`` statistics (and labels)."""

    description: str
    images: torch.Tensor | None = None
    statistics: FeatureStatistics | None = None
    labels: list[int] | None = None


def load_samples(spec: str | os.PathLike, per_class: int = 100) -> tuple[torch.Tensor, list[int] | None]:
    """Existing images to evaluate instead of sampling: uint8 (N, 3, H, W) and their labels (None if unknown).
    Use :func:`sample_names` for the names of their classes.

    ``spec`` is an npz written by ``--save-npz`` (``arr_0`` and ``labels``), a folder of images (no labels), or
    ``demo-train``: the first ``per_class`` real training silhouettes of every class (the real-data baseline of
    the demo table; the training and test splits are disjoint).
    """
    if str(spec) == DEMO_TRAIN_SAMPLES:
        from dar.demo.animal_shapes import animal_shapes_uint8

        return animal_shapes_uint8("train", per_class)
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
        from dar.demo.animal_shapes import animal_shapes_uint8

        images, labels = animal_shapes_uint8("test")
        return Reference(DEMO_TEST_DESCRIPTION, images=images, labels=labels)
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


def sample_names(spec: str | os.PathLike) -> list[str] | None:
    """Class names of :func:`load_samples`' labels where they are known (the demo baseline, an npz written with
    ``class_names``), else None."""
    if str(spec) == DEMO_TRAIN_SAMPLES:
        from dar.demo.animal_shapes import ANIMAL_SHAPE_CLASSES

        return list(ANIMAL_SHAPE_CLASSES)
    if Path(spec).suffix == ".npz" and Path(spec).is_file():
        with np.load(spec, allow_pickle=False) as data:
            return [str(name) for name in data["class_names"]] if "class_names" in data else None
    return None


@dataclass
class Judges:
    """What samples are measured against: the reference, the feature network and (demo) the classifier."""

    reference: Reference
    features: str
    feature: FeatureExtractor
    classifier: torch.nn.Module | None = None
    classifier_path: Path | None = None

    def check_size(self, size: int) -> None:
        """Refuse, before any sampling, a reference of another resolution than the model's ``size``."""
        images = self.reference.images
        if images is not None and tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"the reference images are {tuple(images.shape[-2:])} px but the model makes {size}×{size}: pass a "
                "reference at the model's resolution"
            )

    def to(self, device: torch.device | str) -> Judges:
        for module in (self.feature, self.classifier):
            if module is not None:
                module.to(device)
        return self


def build_judges(
    reference: str | os.PathLike = DEMO_REFERENCE,
    features: str | None = None,
    *,
    inception: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
) -> Judges:
    """Load the reference and the feature network (and the demo classifier when it applies).

    Args:
        reference: see :func:`load_reference`.
        features: ``inception`` or ``classifier``; None: ``classifier`` for ``demo-test``, else ``inception``.
        inception: a local TorchScript Inception file (offline FID).
        classifier: a :class:`~dar.demo.classifier.ShapeClassifier` folder; None uses the shipped demo
            classifier when it exists (its class accuracy is reported where it fits the samples).
    """
    from dar.demo import DEMO_CLASSIFIER
    from dar.demo.classifier import ShapeClassifier

    kind = features or ("classifier" if str(reference) == DEMO_REFERENCE else "inception")
    loaded_reference = load_reference(reference)
    path = Path(classifier) if classifier else DEMO_CLASSIFIER
    judge = None
    if kind == "classifier" or classifier or path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no classifier at {path}: pass --classifier DIR (written by recipes/train_classifier.py)"
            )
        judge = ShapeClassifier.from_pretrained(str(path)).eval()
    feature = build_feature_extractor(kind, inception_path=inception, classifier=judge)
    return Judges(loaded_reference, kind, feature, judge, path if judge is not None else None)


def class_accuracy(
    classifier: torch.nn.Module, images: torch.Tensor, labels: Sequence[int], class_names: Sequence[str]
) -> dict:
    """Accuracy of ``classifier`` on uint8 images with their intended labels: overall and per class name."""
    from dar.demo.classifier import per_class_accuracy

    labels = torch.as_tensor(list(labels))
    device = next(classifier.parameters()).device
    predictions = classifier.predict(from_uint8(images.to(device))).cpu()
    per_class = per_class_accuracy(predictions, labels, len(class_names))
    return {
        "overall": (predictions == labels).float().mean().item(),
        "per_class": {name: acc for name, acc in zip(class_names, per_class) if not math.isnan(acc)},
    }


def evaluate_samples(
    images: torch.Tensor,
    labels: Sequence[int],
    judges: Judges,
    *,
    metrics: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    **metric_kwargs,
) -> dict:
    """Metrics of uint8 samples against the judges' reference, and their class accuracy when the classifier fits.

    Args:
        images: (N, 3, H, W) uint8 samples.
        labels: their intended class ids (empty when unknown: no class accuracy).
        judges: from :func:`build_judges`.
        metrics: a subset of ("fid", "is", "kid", "pr"); None picks every metric the extractor and the
            reference allow (IS needs logits; KID and PR need reference images).
        class_names: names of the class ids, for the per-class table.
        generator: seeds the KID subsets and the IS shuffle.
        **metric_kwargs: passed to :func:`dar.evaluation.metrics.compute_generation_metrics`.

    Returns:
        ``{"metrics": {...}, "class_accuracy": {...} | None, "reference": str}``.
    """
    reference, feature, classifier = judges.reference, judges.feature, judges.classifier
    if reference.images is not None and tuple(reference.images.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(
            f"the reference images are {tuple(reference.images.shape[-2:])} px but the samples are "
            f"{tuple(images.shape[-2:])}: pass a reference at the model's resolution"
        )
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
    labels = list(labels)
    if classifier is not None and labels:
        config = classifier.config
        if tuple(images.shape[-2:]) != (config.image_size,) * 2 or max(labels) >= config.num_classes:
            logger.info("the classifier does not fit these samples: no class accuracy")
        else:
            names = list(class_names or [str(c) for c in range(config.num_classes)])
            accuracy = class_accuracy(classifier, images, labels, names[: config.num_classes])
    # JSON-safe: an undefined value (IS std of one split, ...) becomes None
    results = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in results.items()}
    return {"metrics": results, "class_accuracy": accuracy, "reference": reference.description}


def run_evaluation(
    images: torch.Tensor,
    labels: Sequence[int],
    judges: Judges,
    *,
    class_names: Sequence[str] | None = None,
    save_png: str | os.PathLike | None = None,
    save_npz: str | os.PathLike | None = None,
    seed: int = 0,
    **metric_kwargs,
) -> dict:
    """The protocol's last half, shared by ``dar eval`` and ``recipes/evaluate.py``: write the samples where asked
    (PNG files, an ADM-compatible npz), then :func:`evaluate_samples` with the KID/IS generator seeded by ``seed``.

    The output paths must have been checked beforehand (``dar.images.prepare_*``), before any sampling.
    """
    from dar.images import save_npz as write_npz
    from dar.images import save_pngs

    if save_png is not None:
        save_pngs(images, save_png)
    if save_npz is not None:
        write_npz(
            images,
            save_npz,
            labels=torch.tensor(list(labels)) if len(labels) else None,
            class_names=class_names,
        )
    results = evaluate_samples(
        images,
        labels,
        judges,
        class_names=class_names,
        generator=torch.Generator().manual_seed(seed),
        **metric_kwargs,
    )
    results["num_samples"] = int(images.shape[0])
    return results


def format_results(results: dict) -> str:
    """A short plain-text table of :func:`evaluate_samples`' output."""
    labels = {"fid": "FID", "is": "IS", "kid": "KID", "precision": "precision", "recall": "recall"}
    rows = [f"reference: {results['reference']}"]
    for key, label in labels.items():
        value = results["metrics"].get(key)
        if value is not None:
            std = results["metrics"].get(f"{key}_std")
            rows.append(f"  {label:<15}{value:10.4f}" + (f"  ± {std:.4f}" if std is not None else ""))
    if results["metrics"].get("warning"):
        rows.append(f"  warning: {results['metrics']['warning']}")
    accuracy = results.get("class_accuracy")
    if accuracy:
        rows.append(f"  {'class accuracy':<15}{accuracy['overall']:10.4f}")
        rows += [f"    {name:<13}{acc:10.4f}" for name, acc in accuracy["per_class"].items()]
    return "\n".join(rows)
