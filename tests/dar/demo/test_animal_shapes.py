"""Tests of dar.demo.animal_shapes: the embedded demo set (sizes, classes, split, pinned version)."""

import importlib.metadata

import numpy as np
import pytest
import torch

from dar.data.images import class_names_of
from dar.demo.animal_shapes import ANIMAL_SHAPE_CLASSES, animal_shapes_uint8, load_animal_shapes


@pytest.fixture(scope="module")
def demo_test_split():
    return load_animal_shapes("test")


def test_demo_set_shapes_classes_and_split(demo_test_split):
    ds = demo_test_split
    assert len(ds) == 1000
    assert class_names_of(ds) == list(ANIMAL_SHAPE_CLASSES)
    assert np.bincount(np.asarray(ds["label"]), minlength=10).tolist() == [100] * 10
    image = ds[0]["image"]
    assert image.size == (32, 32) and image.mode == "L"
    pixels = np.stack([np.asarray(ds[i]["image"]) for i in range(0, 1000, 50)])
    assert pixels.dtype == np.uint8 and pixels.max() == 255
    assert (pixels[:, :2].max(), pixels[:, :, :2].max()) == (0, 0)  # the 2-px padding is black
    assert (pixels > 127).mean() < 0.5  # white silhouettes on a black background


def test_demo_train_split_is_disjoint_and_complete():
    train = load_animal_shapes("train")
    assert len(train) == 9000
    assert np.bincount(np.asarray(train["label"]), minlength=10).tolist() == [900] * 10


def test_demo_set_refuses_other_versions(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.40" if name == "animal-shape-mnist" else real(name)
    )
    with pytest.raises(RuntimeError, match="0.39"):
        load_animal_shapes("test")


def test_uint8_split_matches_the_dataset_and_selects_per_class(demo_test_split):
    images, labels = animal_shapes_uint8("test")
    assert images.shape == (1000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels == list(demo_test_split["label"])
    assert torch.equal(images[7, 0], torch.from_numpy(np.asarray(demo_test_split[7]["image"])))
    few, few_labels = animal_shapes_uint8("train", per_class=3)
    assert few.shape[0] == 30 and few_labels == [c for c in range(10) for _ in range(3)]
    with pytest.raises(ValueError, match="per_class"):
        animal_shapes_uint8("train", per_class=0)
