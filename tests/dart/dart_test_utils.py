"""Helpers shared by the dart tests (imported by name; basename unique across test folders)."""

import torch

from dart import DARTModel


def randomise_heads(model: DARTModel, std: float = 0.3) -> DARTModel:
    """Replace the zero-initialised output layers by random ones, so that outputs depend on the inputs."""
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        if model.config.variant == "dart_fm":
            for param in model.fm_head.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        else:
            model.x0_head.weight.copy_(torch.randn(model.x0_head.weight.shape, generator=generator) * std)
            model.x0_head.bias.copy_(torch.randn(model.x0_head.bias.shape, generator=generator) * std)
    return model


def structured_images(num: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """(num, 3, size, size) images in [-1, 1]: two coloured rectangles on black, different per image."""
    generator = torch.Generator().manual_seed(seed)
    images = -torch.ones(num, 3, size, size)
    for i in range(num):
        for _ in range(2):
            top, left = torch.randint(0, size - 2, (2,), generator=generator).tolist()
            height, width = torch.randint(2, size // 2 + 1, (2,), generator=generator).tolist()
            colour = torch.rand(3, generator=generator) * 2 - 1
            images[i, :, top : top + height, left : left + width] = colour[:, None, None]
    return images


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (data range 2): (B, ...) × (B, ...) → (B,)."""
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse)
