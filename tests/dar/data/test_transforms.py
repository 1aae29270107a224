"""Tests of dar.data.transforms: the recipes' augmentations (shapes, ranges, determinism, official ranges)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dar.data.transforms import augment_image, center_crop, random_resized_crop, ten_crop


def _photo(width=50, height=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


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
    import dar.data.transforms as transforms

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
