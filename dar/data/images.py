"""Image data for the training recipes, through Hugging Face ``datasets`` (DESIGN §6, §7, §10).

Sources: an ``imagefolder`` directory (labels from sub-folders), a hub dataset name, the embedded demo set
(:mod:`dar.demo.animal_shapes`), or a synthetic set for tests. ``ImageDataset`` decodes and augments
(:mod:`dar.data.transforms`) one example at a time; an unreadable image is skipped, logged and counted
(``collate_images`` reports ``num_skipped`` per batch), never fatal. High-bit-depth images (16-bit PNGs) are
scaled to 8 bits, not clipped.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from dar.data import mix_seed
from dar.data.transforms import AUGMENTATIONS, Augmentation, augment_image, image_to_tensor, ten_crop
from dar.images import to_8bit

logger = logging.getLogger(__name__)

DataSource = Literal["demo", "imagefolder", "hub", "synthetic", "codes"]
DATA_SOURCES: tuple[str, ...] = ("demo", "imagefolder", "hub", "synthetic", "codes")

__all__ = [
    "DataConfig",
    "ImageDataset",
    "class_names_of",
    "collate_images",
    "first_images",
    "load_image_dataset",
    "synthetic_image_dataset",
    "to_8bit",
]


@dataclass
class DataConfig:
    """Where the training images (or codes) come from and how they are batched.

    Attributes:
        source: ``demo`` (animal-shape-mnist), ``imagefolder`` (``path`` = a directory with one sub-folder per
            class), ``hub`` (``path`` = a dataset name for ``datasets.load_dataset``), ``synthetic`` (random
            images, for tests) or ``codes`` (``path`` = a folder written by ``recipes/extract_codes.py``).
        path: directory or dataset name, as required by ``source``.
        split: dataset split (``train``/``test`` for the demo set).
        image_column: name of the image column (hub datasets).
        label_column: name of the integer label column, or None for unlabelled data (all labels 0).
        image_size: side S of the square training images, in pixels.
        augment: ``random_crop`` (tokenizer), ``ten_crop`` (AR) or ``center_crop`` (evaluation).
        random_flip: also flip horizontally with probability 0.5.
        batch_size: GLOBAL batch per optimizer step (summed over processes and accumulation micro-steps).
        num_workers: DataLoader worker processes per training process.
        synthetic_size: number of images of the synthetic source.
        synthetic_classes: number of classes of the synthetic source.
    """

    source: DataSource = "synthetic"
    path: str | None = None
    split: str = "train"
    image_column: str = "image"
    label_column: str | None = "label"
    image_size: int = 32
    augment: Augmentation = "random_crop"
    random_flip: bool = False
    batch_size: int = 8
    num_workers: int = 0
    synthetic_size: int = 64
    synthetic_classes: int = 10

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"data.augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        for name in ("image_size", "batch_size", "synthetic_size", "synthetic_classes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")

    def require_path(self) -> str:
        """``path``, or a ValueError naming the fix when the source needs one and it is missing."""
        if not self.path:
            raise ValueError(f"data.source={self.source!r} needs data.path (a directory or dataset name)")
        return self.path


# --------------------------------------------------------------------------------------------- sources


def synthetic_image_dataset(
    num_images: int = 64, image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> Any:
    """Random RGB images with labels, for tests and smoke runs.

    Each image is a random per-class colour plus noise, so that a model can in principle tell classes apart.

    Returns:
        A ``datasets.Dataset`` with ``image`` (image_size² RGB PIL) and ``label`` (``ClassLabel``) columns.
    """
    import datasets

    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % num_classes
    colours = rng.integers(0, 256, size=(num_classes, 1, 1, 3))
    noise = rng.integers(-64, 65, size=(num_images, image_size, image_size, 3))
    pixels = np.clip(colours[labels] + noise, 0, 255).astype(np.uint8)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[f"class_{i}" for i in range(num_classes)]),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(x) for x in pixels], "label": labels.tolist()}, features=features
    )


def load_image_dataset(cfg: DataConfig, split: str | None = None) -> Any:
    """Load the images named by ``cfg`` as a ``datasets.Dataset`` with ``cfg.image_column``/``cfg.label_column``.

    Args:
        cfg: the data config (``source`` ``demo``, ``imagefolder``, ``hub`` or ``synthetic``).
        split: overrides ``cfg.split``.

    Returns:
        The dataset; image columns are left undecoded where possible so that ``ImageDataset`` can skip
        unreadable files.
    """
    import datasets

    split = split or cfg.split
    if cfg.source == "demo":
        from dar.demo.animal_shapes import load_animal_shapes

        return load_animal_shapes(split)  # type: ignore[arg-type]
    if cfg.source == "synthetic":
        return synthetic_image_dataset(cfg.synthetic_size, cfg.image_size, cfg.synthetic_classes)
    if cfg.source == "imagefolder":
        if not Path(cfg.require_path()).is_dir():
            raise FileNotFoundError(f"data.path={cfg.path!r} is not a directory (data.source='imagefolder')")
        dataset = datasets.load_dataset("imagefolder", data_dir=cfg.path, split=split)
    elif cfg.source == "hub":
        dataset = datasets.load_dataset(cfg.require_path(), split=split)
    else:
        raise ValueError(f"data.source={cfg.source!r} holds no images; use dar.codes for code shards")
    if cfg.image_column not in dataset.column_names:
        raise ValueError(
            f"no image column {cfg.image_column!r} in {dataset.column_names}; set data.image_column"
        )
    if cfg.label_column is not None and cfg.label_column not in dataset.column_names:
        raise ValueError(
            f"no label column {cfg.label_column!r} in {dataset.column_names}; set data.label_column "
            "(null for unlabelled data)"
        )
    if isinstance(dataset.features[cfg.image_column], datasets.Image):
        dataset = dataset.cast_column(cfg.image_column, datasets.Image(decode=False))
    return dataset


def class_names_of(dataset: Any, label_column: str | None = "label") -> list[str] | None:
    """Class names of a ``ClassLabel`` column, or None when the column is absent or plain integers."""
    if label_column is None or label_column not in getattr(dataset, "features", {}):
        return None
    return list(getattr(dataset.features[label_column], "names", None) or []) or None


# --------------------------------------------------------------------------------------------- torch side


def _decode_image(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        if value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            image = Image.open(value["path"])
        else:
            raise ValueError("image entry has neither bytes nor path")
    elif isinstance(value, (str, os.PathLike)):
        image = Image.open(value)
    else:
        image = Image.fromarray(np.asarray(value, dtype=np.uint8))
    image.load()  # decode now, so that a truncated file fails here and not later
    return to_8bit(image)


class ImageDataset(torch.utils.data.Dataset):
    """Decoded, augmented examples of a ``datasets.Dataset``; unreadable images give None (see ``collate_images``).

    The augmentation of example ``i`` in epoch ``e`` is drawn from a generator seeded by (seed, e, i), so it does
    not depend on worker count, process count or where a run was resumed. Call ``set_epoch`` once per epoch
    (accelerate's ``DataLoader.set_epoch`` forwards to it).

    Args:
        dataset: a ``datasets.Dataset`` (or any indexable of dicts).
        image_size: side S of the output images.
        augment: ``random_crop``, ``ten_crop`` or ``center_crop``.
        random_flip: random horizontal flip on top of ``augment``.
        image_column: name of the image column.
        label_column: name of the label column, or None (all labels 0).
        seed: base seed of the augmentations.
        all_views: with ``augment="ten_crop"``, return all ten crops (10, 3, S, S) instead of a random one.

    Items are ``{"images": float32 (3, S, S) in [-1, 1], "labels": int64 (), "indices": int64 ()}`` or None.
    """

    def __init__(
        self,
        dataset: Any,
        image_size: int,
        augment: Augmentation = "center_crop",
        random_flip: bool = False,
        image_column: str = "image",
        label_column: str | None = "label",
        seed: int = 0,
        all_views: bool = False,
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if all_views and augment != "ten_crop":
            raise ValueError(f"all_views needs augment='ten_crop', got {augment!r}")
        self.all_views = all_views
        self.dataset = dataset
        self.image_size = image_size
        self.augment = augment
        self.random_flip = random_flip
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self.epoch = 0
        self.num_skipped = 0  # counted in this process only; collate_images reports skips across workers

    @classmethod
    def from_config(
        cls, cfg: DataConfig, seed: int = 0, split: str | None = None, dataset: Any = None, **changes: Any
    ) -> ImageDataset:
        """Build from a ``DataConfig`` (loading the source with ``load_image_dataset`` unless ``dataset`` is given).

        ``changes`` override constructor arguments, e.g. ``augment="center_crop"`` for evaluation images.
        """
        kwargs = dict(
            image_size=cfg.image_size,
            augment=cfg.augment,
            random_flip=cfg.random_flip,
            image_column=cfg.image_column,
            label_column=cfg.label_column,
            seed=seed,
        )
        kwargs.update(changes)
        return cls(load_image_dataset(cfg, split) if dataset is None else dataset, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def generator_for(self, index: int) -> torch.Generator:
        """The augmentation generator of example ``index`` in the current epoch."""
        return torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        example = self.dataset[int(index)]
        try:
            image = _decode_image(example[self.image_column])
            generator = self.generator_for(index)
            if self.all_views:
                views = [ten_crop(image, self.image_size, index=k) for k in range(10)]
                tensor = torch.stack([image_to_tensor(v) for v in views])  # (10, 3, S, S)
            else:
                tensor = augment_image(
                    image, self.image_size, self.augment, self.random_flip, generator=generator
                )
        except Exception as err:  # a corrupt file must never stop a run (DESIGN §10)
            self.num_skipped += 1
            where = example.get(self.image_column) if isinstance(example, dict) else None
            if isinstance(where, dict):
                where = where.get("path") or "<bytes>"
            logger.warning("skipping unreadable image %d (%s): %s: %s", index, where, type(err).__name__, err)
            return None
        label = 0 if self.label_column is None else int(example[self.label_column])
        return {
            "images": tensor,
            "labels": torch.tensor(label, dtype=torch.int64),
            "indices": torch.tensor(int(index), dtype=torch.int64),
        }


def collate_images(items: list[dict[str, torch.Tensor] | None]) -> dict[str, Any]:
    """Stack the readable examples of a batch and count the unreadable ones.

    Returns:
        ``{"images": (B', 3, S, S) float32, "labels": (B',) int64, "indices": (B',) int64, "num_skipped": int}``
        with B' ≤ len(items) (images are (B', 10, 3, S, S) with ``all_views``); B' is 0 when every image failed.
    """
    good = [item for item in items if item is not None]
    skipped = len(items) - len(good)
    if not good:
        empty = torch.empty(0, dtype=torch.int64)
        return {"images": torch.empty(0, 3, 0, 0), "labels": empty, "indices": empty, "num_skipped": skipped}
    batch = {key: torch.stack([item[key] for item in good]) for key in ("images", "labels", "indices")}
    batch["num_skipped"] = skipped
    return batch


def first_images(dataset: ImageDataset, count: int) -> torch.Tensor:
    """The first ``count`` readable images of ``dataset`` as (count', 3, S, S), e.g. a fixed sample-grid batch."""
    images = []
    for index in range(len(dataset)):
        item = dataset[index]
        if item is not None:
            images.append(item["images"])
        if len(images) == count:
            break
    if not images:
        raise ValueError("the dataset holds no readable image")
    return torch.stack(images)
