"""What small trained models learn: the Gaussian posterior from the level history, and 8 images by heart."""

import pytest
import torch

from dart import DARTModel, iter_levels
from dart.schedule import cumulative_snr, snr


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


@pytest.mark.slow
def test_trained_model_reaches_the_gaussian_posterior_through_the_history():
    """x_0 ~ N(0, I): the best level-t loss is 1/(1 + Γ_t) with the history and 1/(1 + SNR_t) without it.

    A small DART trained for 200 steps must get well below the history-free floor at the middle levels (so it
    reads the noisier levels), never below the Bayes floor, and its per-level loss must fall as t falls.
    """
    torch.manual_seed(0)
    model = DARTModel.from_preset(
        "tiny",
        space="latent",  # unbounded Gaussian samples, no pixel-range check
        image_size=4,
        in_channels=1,
        num_levels=8,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        num_classes=1,
        class_dropout=0.0,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(64, dtype=torch.long)
    for _ in range(200):
        losses = model.training_losses(
            torch.randn(64, 1, 4, 4, generator=generator), labels, generator=generator
        )
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
    with torch.no_grad():
        samples = torch.randn(2048, 1, 4, 4, generator=generator)
        per_level = (
            model.eval().training_losses(samples, labels.new_zeros(2048), generator=generator).per_level
        )
    with_history = (1 / (1 + cumulative_snr(model.schedule.gammas))).float()
    own_level = (1 / (1 + snr(model.schedule.gammas))).float()
    assert bool((per_level[:-1] < per_level[1:]).all()), per_level.tolist()
    assert bool((per_level > 0.95 * with_history).all()), (per_level.tolist(), with_history.tolist())
    assert bool((per_level[1:4] < 0.9 * own_level[1:4]).all()), (per_level.tolist(), own_level.tolist())
