"""Tests of dar.inputs: what a generation call accepts as a layout reference."""

import numpy as np
import torch
from PIL import Image

from dar.inputs import reference_tensor


def test_a_16_bit_pil_reference_is_scaled_not_clipped():
    levels = np.linspace(0, 65535, 8 * 8).reshape(8, 8).astype(np.uint16)
    reference = reference_tensor(Image.fromarray(levels))
    expected = torch.from_numpy(np.rint(levels * (255 / 65535)).astype(np.uint8)).float() / 127.5 - 1
    assert reference.shape == (1, 3, 8, 8)
    assert torch.equal(reference[0, 1], expected)


def test_uint8_and_pil_references_agree():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert torch.equal(reference_tensor(Image.fromarray(pixels)), reference_tensor(pixels))
