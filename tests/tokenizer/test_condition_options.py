"""Tests of the decoder's condition options (ours, off by default): the "prefix" context and the residual path."""

import pytest
import torch
from tiny import random_images, randomize_

from tokenizer import DARTokenizer, TokenizerConfig
from tokenizer.flow import group_of_u, interpolate, scale_images, shift_time


def _tok(**options) -> DARTokenizer:
    torch.manual_seed(0)
    return randomize_(DARTokenizer.from_preset("tiny", **options)).eval()


def _noise(tok, batch=2, seed=1):
    size = tok.config.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "options",
    [
        {"decoder_condition_context": "prefix"},
        {"decoder_condition_residual": True},
        {"decoder_position_embedding": True},
        {"decoder_condition_tokens": True},
        {"decoder_condition_tokens": True, "decoder_condition_context": "prefix"},
        {"regression_weight": 1.0, "decoder_estimate_input": True},
    ],
)
def test_options_change_the_decode_and_keep_stream_equal_to_decode(options):
    images = random_images(2, 16, seed=0)
    official, ours = _tok(), _tok(**options)
    codes = ours.encode(images)
    assert torch.equal(codes, official.encode(images))  # the encoder side is untouched
    decoded = ours.decode(codes, noise=_noise(ours))
    assert not torch.allclose(decoded, official.decode(codes, noise=_noise(official)))
    tps = ours.config.tokens_per_step
    chunks = iter(codes.split(tps, dim=1))
    *_, last = ours.stream(chunks, num_groups=codes.shape[1] // tps, noise=_noise(ours))
    torch.testing.assert_close(last.sample, decoded)


def test_prefix_step_sees_earlier_groups_and_never_later_ones():
    tok = _tok(decoder_condition_context="prefix")
    codes, tps = tok.encode(random_images(1, 16, seed=0)), tok.config.tokens_per_step
    cond = tok.conditioning(tok.quantizer.lookup(codes))
    x, t = _noise(tok, batch=1), torch.full((1,), 0.5)
    step1 = tok.decoder(x, t, cond[:, : 2 * tps]).velocity
    other = codes.clone()
    other[:, :tps] = (other[:, :tps] + 1) % tok.config.codebook_size  # change group 0 only
    cond_other = tok.conditioning(tok.quantizer.lookup(other))
    assert not torch.allclose(step1, tok.decoder(x, t, cond_other[:, : 2 * tps]).velocity)
    # In training, the key mask hides the later groups exactly as slicing them away does.
    mask = torch.arange(cond.shape[1])[None] < 2 * tps
    torch.testing.assert_close(tok.decoder(x, t, cond, cond_mask=mask).velocity, step1)


def test_prefix_training_loss_matches_a_manual_prefix_decode():
    tok = _tok(decoder_condition_context="prefix")
    images = random_images(2, 16, seed=3)
    losses = tok.training_losses(images, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    u = torch.rand(2, generator=g)
    groups, s, tps = (
        group_of_u(u, tok.config.num_steps),
        shift_time(u, tok.config.time_shift),
        tok.config.tokens_per_step,
    )
    data = scale_images(images, tok.config.data_scale)
    noise = torch.randn(data.shape, generator=g)
    x_t = interpolate(noise, data, s)
    cond = tok.conditioning(tok.quantizer.lookup(tok.encode(images)))
    errors = []
    for i in range(2):
        v = tok.decoder(x_t[i : i + 1], s[i : i + 1], cond[i : i + 1, : (groups[i] + 1) * tps]).velocity
        errors.append((v - (data[i : i + 1] - noise[i : i + 1])).pow(2).mean())
    assert torch.equal(losses.groups, groups)
    assert torch.isfinite(losses.total)
    # The masked batch gives each image the loss of decoding it with its own prefix of groups.
    torch.testing.assert_close(losses.flow, torch.stack(errors).mean() / tok.config.data_scale**2)


def test_options_validate_and_default_to_the_official_behaviour():
    assert TokenizerConfig().decoder_condition_context == "group"
    assert TokenizerConfig().decoder_condition_residual is False
    with pytest.raises(ValueError, match="decoder_condition_context must be one of"):
        TokenizerConfig(decoder_condition_context="all")
    with pytest.raises(ValueError, match="decoder_condition_residual must be a bool"):
        TokenizerConfig(decoder_condition_residual=1)
    with pytest.raises(ValueError, match="decoder_position_embedding must be a bool"):
        TokenizerConfig(decoder_position_embedding="learned")


def test_position_embedding_is_absent_by_default_and_travels_with_the_folder(tmp_path):
    assert not any("pos_embed" in key for key in DARTokenizer.from_preset("tiny").state_dict())
    tok = _tok(decoder_position_embedding=True)
    assert tok.decoder.pos_embed.shape == (1, tok.config.decoder_grid**2, tok.config.decoder_dim)
    tok.save_pretrained(tmp_path / "tok")
    loaded = DARTokenizer.from_pretrained(tmp_path / "tok").eval()
    codes = tok.encode(random_images(2, 16, seed=0))
    torch.testing.assert_close(loaded.decode(codes, noise=_noise(tok)), tok.decode(codes, noise=_noise(tok)))
    with pytest.raises(ValueError, match="decode at the configured image_size"):
        tok.decoder(torch.zeros(1, 3, 32, 32), torch.zeros(1), torch.zeros(1, 4, tok.config.condition_dim))


def test_regression_term_is_training_only_and_absent_at_the_official_setting(tmp_path):
    assert DARTokenizer.from_preset("tiny").regressor is None  # official layout: no extra keys
    tok = _tok(regression_weight=0.5).train()
    images = random_images(2, 16, seed=3)
    losses = tok.training_losses(images, generator=torch.Generator().manual_seed(5))
    assert losses.regression is not None and "regression" in losses.terms()
    torch.testing.assert_close(losses.total, losses.flow + losses.vq + 0.5 * losses.regression)
    losses.total.backward()
    assert tok.encoder.parameters().__next__().grad is not None
    assert all(p.grad is not None for p in tok.regressor.parameters() if p.requires_grad)
    # decoding never runs the regressor, and it travels with the folder (strict keys)
    tok.eval()
    codes = tok.encode(images)
    reference = tok.decode(codes, noise=_noise(tok))
    for p in tok.regressor.parameters():
        p.data.add_(1.0)
    torch.testing.assert_close(tok.decode(codes, noise=_noise(tok)), reference)
    tok.save_pretrained(tmp_path / "tok")
    loaded = DARTokenizer.from_pretrained(tmp_path / "tok")
    torch.testing.assert_close(loaded.regressor.conv_in.weight, tok.regressor.conv_in.weight)
    with pytest.raises(ValueError, match="regression_weight must be a finite number"):
        TokenizerConfig(regression_weight=-1.0)


def test_estimate_input_uses_the_regressor_on_the_groups_decoded_so_far(tmp_path):
    tok = _tok(regression_weight=1.0, decoder_estimate_input=True)
    assert tok.regressor.estimate_in is None and tok.decoder.estimate_in is not None
    images = random_images(2, 16, seed=0)
    codes, tps = tok.encode(images), tok.config.tokens_per_step
    steps = list(tok.stream(codes, noise=_noise(tok)))
    # decoding now depends on the regressor ...
    for p in tok.regressor.parameters():
        p.data.add_(0.1)
    assert not torch.allclose(tok.decode(codes, noise=_noise(tok)), steps[-1].sample)
    for p in tok.regressor.parameters():
        p.data.sub_(0.1)
    # ... through groups 0…k only: changing the last group leaves every earlier step as it was
    other = codes.clone()
    other[:, -tps:] = (other[:, -tps:] + 1) % tok.config.codebook_size
    changed = list(tok.stream(other, noise=_noise(tok)))
    for before, after in zip(steps[:-1], changed[:-1], strict=True):
        torch.testing.assert_close(after.sample, before.sample)
    assert not torch.allclose(changed[-1].sample, steps[-1].sample)
    # training sends the flow loss's gradient through the estimate into the regressor
    tok.train()
    losses = tok.training_losses(images, generator=torch.Generator().manual_seed(5))
    tok.zero_grad()
    losses.flow.backward()
    assert tok.decoder.estimate_in.weight.grad.abs().sum() > 0
    assert tok.regressor.conv_out.weight.grad.abs().sum() > 0
    tok.eval().save_pretrained(tmp_path / "tok")  # (training moved the EMA codebook: decode again)
    loaded = DARTokenizer.from_pretrained(tmp_path / "tok")
    torch.testing.assert_close(loaded.decode(codes, noise=_noise(tok)), tok.decode(codes, noise=_noise(tok)))


def test_estimate_input_validates():
    assert TokenizerConfig().decoder_estimate_input is False
    assert "estimate_in" not in str(list(DARTokenizer.from_preset("tiny").state_dict()))
    with pytest.raises(ValueError, match="set regression_weight > 0"):
        TokenizerConfig(decoder_estimate_input=True)
    with pytest.raises(ValueError, match="decoder_estimate_input must be a bool"):
        TokenizerConfig(regression_weight=1.0, decoder_estimate_input=1)
    tok = _tok(regression_weight=1.0, decoder_estimate_input=True)
    x, t = _noise(tok, batch=1), torch.zeros(1)
    cond = torch.zeros(1, tok.config.tokens_per_step, tok.config.condition_dim)
    with pytest.raises(ValueError, match="pass estimate= exactly when"):
        tok.decoder(x, t, cond)
    with pytest.raises(ValueError, match="pass estimate= exactly when"):
        tok.regressor(x, t, cond, estimate=x)


def test_regression_all_groups_adds_the_whole_code_regression():
    images, g = random_images(2, 16, seed=3), torch.Generator
    plain = _tok(regression_weight=1.0).eval()  # eval: the EMA codebook stays put
    both = _tok(regression_weight=1.0, regression_all_groups=True).eval()
    prefix_only = plain.training_losses(images, generator=g().manual_seed(5)).regression
    total = both.training_losses(images, generator=g().manual_seed(5)).regression
    cond = both.conditioning(both.quantizer.quantize(both.encoder(images)).vectors)  # the training path
    whole = both.regressor(torch.zeros_like(images), torch.zeros(2), cond).velocity
    torch.testing.assert_close(total, prefix_only + torch.nn.functional.mse_loss(whole, images))
    with pytest.raises(ValueError, match="set regression_weight > 0"):
        TokenizerConfig(regression_all_groups=True)
