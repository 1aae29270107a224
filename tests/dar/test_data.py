"""Tests of dar.data and dar.transforms: demo set, augmentations, imagefolder with a corrupt file."""

import importlib.metadata

import numpy as np
import pytest
import torch
from PIL import Image

from dar.data import (
    ANIMAL_SHAPE_CLASSES,
    DataConfig,
    ImageDataset,
    class_names_of,
    collate_images,
    load_animal_shapes,
    load_image_dataset,
    save_image_grid,
    synthetic_image_dataset,
)
from dar.transforms import augment_image, center_crop, random_resized_crop, ten_crop


@pytest.fixture(scope="module")
def demo_test_split():
    return load_animal_shapes("test")


def _photo(width=50, height=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


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


def test_demo_examples_are_three_channel_tensors_in_range(demo_test_split):
    ds = ImageDataset(demo_test_split, 32, "ten_crop")
    item = ds[3]
    assert item["images"].shape == (3, 32, 32) and item["images"].dtype == torch.float32
    assert item["images"].min() >= -1 and item["images"].max() <= 1
    assert torch.equal(item["images"][0], item["images"][1])  # grey repeated to RGB
    assert item["labels"].dtype == torch.int64


@pytest.mark.parametrize("augment", ["random_crop", "ten_crop", "center_crop"])
def test_augmentations_shape_range_and_determinism(augment):
    image = _photo()
    outs = [augment_image(image, 32, augment, True, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert outs[0].shape == (3, 32, 32)
    assert outs[0].min() >= -1 and outs[0].max() <= 1
    assert torch.equal(outs[0], outs[1])
    others = {
        augment_image(image, 32, augment, True, torch.Generator().manual_seed(s)).sum().item()
        for s in range(8)
    }
    assert len(others) > 1  # the flip at least varies


def test_random_crop_draws_shorter_side_in_official_range(monkeypatch):
    import dar.transforms as transforms

    sizes = []
    real = transforms.resize_shorter_side
    monkeypatch.setattr(transforms, "resize_shorter_side", lambda im, s: sizes.append(s) or real(im, s))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        assert random_resized_crop(_photo(300, 256), 256, g).size == (256, 256)
    assert min(sizes) == 256 and max(sizes) == 320


def test_ten_crop_flips_and_centre():
    image = _photo(80, 60)
    for i in range(5):
        plain, flipped = ten_crop(image, 32, index=i), ten_crop(image, 32, index=i + 5)
        assert np.array_equal(np.asarray(plain)[:, ::-1], np.asarray(flipped))
    base = center_crop(image, 35)
    assert np.array_equal(np.asarray(ten_crop(image, 32, index=0)), np.asarray(base)[:32, :32])
    assert center_crop(image, 32).size == (32, 32)


def test_image_dataset_augmentations_depend_on_seed_epoch_index():
    ds = ImageDataset(synthetic_image_dataset(8, 32, 2), 32, "random_crop", seed=1)
    first = ds[0]["images"]
    assert torch.equal(first, ds[0]["images"])
    changed = []
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        changed.append(not torch.equal(first, ds[0]["images"]))
    assert any(changed)


def test_imagefolder_with_corrupt_file_is_skipped_and_counted(tmp_path, caplog):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _photo(40, 36, seed=i).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    cfg = DataConfig(source="imagefolder", path=str(tmp_path), image_size=32, augment="center_crop")
    ds = ImageDataset.from_config(cfg)
    assert len(ds) == 7 and class_names_of(load_image_dataset(cfg)) == ["cat", "dog"]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_images)
    with caplog.at_level("WARNING"):
        batches = list(loader)
    assert sum(b["num_skipped"] for b in batches) == 1
    assert sum(b["images"].shape[0] for b in batches) == 6
    paths = [row["path"] for row in ds.dataset["image"]]
    kept = sorted(i for b in batches for i in b["indices"].tolist())
    assert kept == [i for i, p in enumerate(paths) if not p.endswith("broken.png")]
    assert "broken.png" in caplog.text


def test_all_ten_views(demo_test_split):
    ds = ImageDataset(demo_test_split, 32, "ten_crop", all_views=True)
    views = ds[0]["images"]
    assert views.shape == (10, 3, 32, 32)
    assert torch.equal(views[5], views[0].flip(-1))


def test_collate_of_only_failures_is_empty():
    batch = collate_images([None, None])
    assert batch["images"].shape[0] == 0 and batch["num_skipped"] == 2


def test_data_config_validation():
    with pytest.raises(ValueError, match="data.path"):
        load_image_dataset(DataConfig(source="imagefolder"))
    with pytest.raises(ValueError, match="augment"):
        DataConfig(augment="flip")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_image_dataset(DataConfig(source="imagefolder", path="/nonexistent/folder"))


def test_save_image_grid(tmp_path):
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    path = save_image_grid(images, tmp_path / "grid.png", nrow=3)
    assert Image.open(path).size == (24, 16)
