"""Image augmentations of the D-AR training recipes, written with PIL + torch (no torchvision).

Implements the data side of the paper's training setup (reference §3 and §4.2):

- tokenizer training: ``random_resized_crop``, the ADM ``random_crop_arr`` (resize the shorter side to a random
  integer in [S, ceil(S / 0.8)] = [S, 1.25·S], then a random S×S crop; [256, 320] at 256 px);
- AR training: ``ten_crop``, the LlamaGen ten-crop (ADM centre crop to int(1.1·S), then one of the four corner
  crops, the centre crop, or their horizontal flips, picked at random);
- evaluation: ``center_crop``, the ADM ``center_crop_arr``.

Every random choice is drawn from a ``torch.Generator`` so that a data order and its augmentations can be
reproduced exactly (e.g. after ``--resume``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from PIL import Image

Augmentation = Literal["random_crop", "ten_crop", "center_crop"]
AUGMENTATIONS: tuple[str, ...] = ("random_crop", "ten_crop", "center_crop")

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "augment_image",
    "center_crop",
    "image_to_tensor",
    "random_resized_crop",
    "resize_shorter_side",
    "ten_crop",
]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"image size must be a positive int, got {size!r}")


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` (ADM: halve with BOX while ≥ 2·size, then BICUBIC).

    Args:
        image: a PIL image of any mode.
        size: target length of the shorter side, in pixels.

    Returns:
        The resized PIL image, aspect ratio kept (sides rounded to the nearest integer).
    """
    _check_size(size)
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    new_size = tuple(round(side * scale) for side in image.size)  # the shorter side becomes exactly `size`
    if new_size != image.size:
        image = image.resize(new_size, resample=Image.Resampling.BICUBIC)
    return image


def _crop(image: Image.Image, left: int, top: int, size: int) -> Image.Image:
    return image.crop((left, top, left + size, top + size))


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM centre crop: resize the shorter side to ``size``, then crop the central size×size square.

    Args:
        image: a PIL image.
        size: output side S in pixels.

    Returns:
        A size×size PIL image.
    """
    image = resize_shorter_side(image, size)
    width, height = image.size
    return _crop(image, (width - size) // 2, (height - size) // 2, size)


def random_resized_crop(
    image: Image.Image,
    size: int,
    generator: torch.Generator | None = None,
    max_scale: float = 1.25,
) -> Image.Image:
    """ADM ``random_crop_arr``: shorter side to a random integer in [S, ceil(max_scale·S)], random S×S crop.

    Args:
        image: a PIL image.
        size: output side S in pixels.
        generator: source of the random resize and crop offsets.
        max_scale: the largest shorter side as a multiple of S (1.25 = the official min crop fraction 0.8).

    Returns:
        A size×size PIL image.
    """
    _check_size(size)
    if max_scale < 1.0:
        raise ValueError(f"max_scale must be >= 1.0, got {max_scale}")
    shorter = _randint(size, math.ceil(size * max_scale), generator)
    image = resize_shorter_side(image, shorter)
    width, height = image.size
    top = _randint(0, height - size, generator)
    left = _randint(0, width - size, generator)
    return _crop(image, left, top, size)


def ten_crop(
    image: Image.Image,
    size: int,
    generator: torch.Generator | None = None,
    index: int | None = None,
) -> Image.Image:
    """LlamaGen ten-crop: ADM centre crop to int(1.1·S), then one of ten S×S crops.

    Crops 0-3 are the top-left, top-right, bottom-left and bottom-right corners, 4 the centre, and 5-9 the same
    five crops flipped horizontally.

    Args:
        image: a PIL image.
        size: output side S in pixels.
        generator: source of the crop choice when ``index`` is None.
        index: which of the ten crops to return (0-9); random when None.

    Returns:
        A size×size PIL image.
    """
    _check_size(size)
    if index is None:
        index = _randint(0, 9, generator)
    if not 0 <= index <= 9:
        raise ValueError(f"ten_crop index must be in [0, 9], got {index}")
    base = center_crop(image, int(size * 1.1))
    width, height = base.size
    corners = [(0, 0), (width - size, 0), (0, height - size), (width - size, height - size)]
    corners.append(((width - size) // 2, (height - size) // 2))
    crop = _crop(base, *corners[index % 5], size)
    if index >= 5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image of any mode -> float32 tensor (3, H, W) in [-1, 1] (grey is repeated to three channels)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, H, W)
    return tensor.to(torch.float32) / 127.5 - 1.0


def augment_image(
    image: Image.Image,
    size: int,
    augment: Augmentation = "center_crop",
    random_flip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply one of the recipe augmentations and convert to a tensor.

    Args:
        image: a PIL image of any size and mode.
        size: output side S in pixels.
        augment: ``"random_crop"`` (tokenizer), ``"ten_crop"`` (AR) or ``"center_crop"`` (evaluation).
        random_flip: additionally flip horizontally with probability 0.5 (the official ImageFolder path does).
        generator: source of all random choices.

    Returns:
        float32 tensor (3, S, S) in [-1, 1].
    """
    if augment == "random_crop":
        image = random_resized_crop(image, size, generator=generator)
    elif augment == "ten_crop":
        image = ten_crop(image, size, generator=generator)
    elif augment == "center_crop":
        image = center_crop(image, size)
    else:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")
    if random_flip and _randint(0, 1, generator) == 1:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image_to_tensor(image)
