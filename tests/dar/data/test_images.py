"""Tests of dar.data.images: datasets with augmentations, a corrupt file skipped and counted, 16-bit images."""

import numpy as np
import pytest
import torch
from PIL import Image

from dar.data.images import (
    DataConfig,
    ImageDataset,
    class_names_of,
    collate_images,
    load_image_dataset,
    synthetic_image_dataset,
    to_8bit,
)
from dar.demo.animal_shapes import load_animal_shapes


@pytest.fixture(scope="module")
def demo_test_split():
    return load_animal_shapes("test")


def _photo(width=50, height=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_demo_examples_are_three_channel_tensors_in_range(demo_test_split):
    ds = ImageDataset(demo_test_split, 32, "ten_crop")
    item = ds[3]
    assert item["images"].shape == (3, 32, 32) and item["images"].dtype == torch.float32
    assert item["images"].min() >= -1 and item["images"].max() <= 1
    assert torch.equal(item["images"][0], item["images"][1])  # grey repeated to RGB
    assert item["labels"].dtype == torch.int64


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


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)  # 0 … 64512 of 65535
    path = tmp_path / "cls" / "ramp.png"
    path.parent.mkdir()
    Image.fromarray(ramp).save(path)  # a 16-bit greyscale PNG
    assert Image.open(path).mode.startswith("I")
    image = to_8bit(Image.open(path))
    assert image.mode == "L"
    expected = np.clip(np.rint(ramp * (255 / 65535)), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image), expected)
    cfg = DataConfig(
        source="imagefolder", path=str(tmp_path), image_size=8, augment="center_crop", label_column=None
    )
    pixels = ImageDataset.from_config(cfg)[0]["images"]
    assert (pixels > 0.99).float().mean() < 0.05  # not 99.6 % white, as a clipping conversion gives
