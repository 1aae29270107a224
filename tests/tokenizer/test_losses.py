"""Tests of tokenizer/losses.py and DARTokenizer.training_losses: terms, injection, and an overfit check."""

import pytest
import torch
from tiny import random_images

from tokenizer import DARTokenizer, Dinov2Target, TokenizerLosses
from tokenizer.losses import flow_matching_loss, repa_loss


def test_total_combines_present_terms_with_weights():
    losses = TokenizerLosses(flow=torch.tensor(1.0), vq=torch.tensor(0.5))
    assert losses.total.item() == 1.5
    losses.perceptual, losses.perceptual_weight = torch.tensor(2.0), 0.5
    losses.repa, losses.repa_weight = torch.tensor(0.4), 0.5
    assert losses.total.item() == pytest.approx(1.5 + 1.0 + 0.2)
    terms = losses.terms()
    assert set(terms) == {"loss", "flow", "vq", "perceptual", "repa"}
    assert terms["loss"] is not None and terms["loss"].item() == pytest.approx(2.7)


def test_flow_loss_is_mse_over_data_scale_squared():
    pred, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    expected = ((pred - target) ** 2).mean() / 0.36
    torch.testing.assert_close(flow_matching_loss(pred, target, 0.6), expected)


def test_repa_loss_is_one_minus_cosine_and_checks_shapes():
    a = torch.randn(2, 4, 8)
    assert repa_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert repa_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="REPA target"):
        repa_loss(a, torch.randn(2, 5, 8))


def test_training_losses_returns_dataclass_and_updates_ema_in_training():
    tok = DARTokenizer.from_preset("tiny").train()
    embed = tok.quantizer.vq._codebook.embed.clone()
    losses = tok.training_losses(random_images(4, 16), generator=torch.Generator().manual_seed(0))
    assert isinstance(losses, TokenizerLosses)
    assert losses.perceptual is None and losses.repa is None
    assert (
        losses.groups.shape == (4,)
        and losses.groups.min() >= 0
        and losses.groups.max() < tok.config.num_steps
    )
    assert losses.total.ndim == 0 and losses.vq > 0
    losses.total.backward()
    assert tok.encoder.patch_embed.weight.grad is not None
    assert not torch.equal(tok.quantizer.vq._codebook.embed, embed)


def test_training_losses_are_reproducible_with_a_generator():
    tok = DARTokenizer.from_preset("tiny").eval()
    images = random_images(2, 16)
    a = tok.training_losses(images, generator=torch.Generator().manual_seed(3))
    b = tok.training_losses(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.total, b.total)
    assert torch.equal(a.groups, b.groups)


def test_injected_perceptual_loss_and_dinov2_repa_target():
    from transformers import Dinov2Config, Dinov2Model

    tok = DARTokenizer.from_preset("tiny").train()
    cfg = tok.config
    dino = Dinov2Model(
        Dinov2Config(
            hidden_size=cfg.repa_dim,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            patch_size=2,
            image_size=cfg.repa_grid * 2,
        )
    )
    target = Dinov2Target(dino, grid=cfg.repa_grid)
    images = random_images(2, 16)
    assert target(images).shape == (2, cfg.repa_grid**2, cfg.repa_dim)
    seen = {}

    def perceptual(reference, reconstruction):
        seen["reference"], seen["reconstruction"] = reference, reconstruction
        return (reference - reconstruction).abs().mean(dim=(1, 2, 3))

    losses = tok.training_losses(
        images,
        generator=torch.Generator().manual_seed(0),
        perceptual_loss=perceptual,
        perceptual_weight=0.5,
        repa_target=target,
        repa_weight=0.25,
    )
    assert torch.equal(seen["reference"], images)
    assert seen["reconstruction"].shape == images.shape
    assert 0 <= losses.repa.item() <= 2
    expected = losses.flow + losses.vq + 0.5 * losses.perceptual + 0.25 * losses.repa
    torch.testing.assert_close(losses.total, expected)
    losses.total.backward()
    assert tok.decoder.repa_out[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in dino.parameters())


def test_total_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    tok = DARTokenizer.from_preset("tiny").train()
    images = random_images(4, 16)
    optimizer = torch.optim.Adam(tok.parameters(), lr=3e-3)
    history = []
    for _ in range(50):
        losses = tok.training_losses(images, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
        history.append(losses.total.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5, history


def test_loss_module_returns_the_terms_of_training_losses():
    from tokenizer import TokenizerLossModule

    tok = DARTokenizer.from_preset(
        "tiny"
    ).eval()  # eval: the EMA codebook does not move between the two calls
    module = TokenizerLossModule(
        tok, perceptual_loss=lambda a, b: (a - b).abs().mean(), perceptual_weight=0.25
    )
    images = random_images(4, 16)
    terms = module(images, torch.Generator().manual_seed(0))
    expected = tok.training_losses(
        images,
        torch.Generator().manual_seed(0),
        perceptual_loss=lambda a, b: (a - b).abs().mean(),
        perceptual_weight=0.25,
    )
    assert set(terms) == {"loss", "flow", "vq", "perceptual"}
    torch.testing.assert_close(terms["loss"], expected.total)
    assert not any("perceptual" in name for name, _ in module.named_modules())  # frozen nets stay outside
