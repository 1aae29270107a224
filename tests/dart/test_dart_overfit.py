"""Overfit 8 images (one per class): near-zero loss, unguided samples reproduce them, previews sharpen by level."""

import pytest
import torch

from dart import DARTModel, iter_levels


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


@pytest.fixture(scope="module")
def overfit():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = structured_images(8)
    labels = torch.arange(8)
    model = DARTModel.from_preset(
        "tiny", num_classes=8, hidden_size=64, num_heads=2, intermediate_size=128, class_dropout=0.0
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        losses = model.training_losses(images, labels, generator=generator)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval(), images, labels, losses


@pytest.mark.slow
def test_overfit_loss_is_near_zero(overfit):
    _, images, _, losses = overfit
    assert float(losses.total.detach()) < 0.01 * float(images.pow(2).mean())  # < 1 % of the untrained loss
    assert bool((losses.per_level < 0.01).all())


@pytest.mark.slow
def test_unguided_samples_reproduce_the_training_images(overfit):
    model, images, labels, _ = overfit
    steps = list(iter_levels(model, labels, cfg_scale=1.0, generator=torch.Generator().manual_seed(1)))
    quality = psnr(steps[-1].x0, images)
    assert bool((quality > 30).all()), f"PSNR per image: {quality.tolist()}"
    # previews: the PSNR between the level-t estimate and the final image rises as t falls
    to_final = torch.stack([psnr(step.x0, steps[-1].x0).mean() for step in steps[:-1]])
    assert bool((to_final[1:] > to_final[:-1]).all()), f"preview PSNR by step: {to_final.tolist()}"
