"""Helpers shared by the dart tests (imported by name; basename unique across test folders)."""

import torch

from dart import DARTModel


def randomise_heads(model: DARTModel, std: float = 0.3) -> DARTModel:
    """Give the zero-initialised output layers random weights, so that outputs depend on the inputs.

    DART / DART-AR: the x̂_0 head gets N(0, std²) weights and bias. DART-FM: the flow head's zero-initialised
    adaLN modulations and output layer get N(0, (std / 3)²) (its other layers keep their default init).
    """
    generator = torch.Generator().manual_seed(1234)
    if model.config.variant == "dart_fm":
        head = model.fm_head
        layers = [*(block.modulation[-1] for block in head.blocks), head.final_modulation[-1], head.output]
        std = std / 3
    else:
        layers = [model.x0_head]
    with torch.no_grad():
        for layer in layers:
            for param in (layer.weight, layer.bias):
                param.copy_(torch.randn(param.shape, generator=generator) * std)
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
