"""The sampler: cached == uncached == teacher forcing (with CFG), guidance, randomness, call counts, modes."""

import pytest
import torch

from dart import guidance_scales, iter_levels, patchify, sample

LABELS = [0, 1, 3]


def _run(model, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(1))
    return list(iter_levels(model, LABELS, **kwargs))


@pytest.mark.parametrize("variant", ["dart", "dart_ar", "dart_fm"])
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_cached_equals_uncached_with_cfg(make_model, variant, schedule):
    model = make_model(variant)
    kwargs = dict(cfg_scale=3.0, cfg_schedule=schedule, cfg_scale_start=1.5)
    cached, uncached = _run(model, **kwargs), _run(model, use_cache=False, **kwargs)
    assert [s.level for s in cached] == [4, 3, 2, 1] and [s.index for s in cached] == [0, 1, 2, 3]
    for a, b in zip(cached, uncached, strict=True):
        torch.testing.assert_close(a.x0, b.x0)
        torch.testing.assert_close(a.noisy, b.noisy)
        assert a.cfg_scale == b.cfg_scale
    if schedule == "linear":
        assert [s.cfg_scale for s in cached] == pytest.approx([1.5, 2.0, 2.5, 3.0])


@pytest.mark.parametrize("variant", ["dart", "dart_ar"])
@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_sampler_equals_teacher_forcing_on_its_own_sequence(make_model, variant, cfg_scale):
    """Feeding the sampled levels x_T … x_1 back through one teacher-forced forward gives the same x̂_0s."""
    model = make_model(variant)
    cfg = model.config
    steps = _run(model, cfg_scale=cfg_scale, clip_denoised=False)
    noisy = torch.stack([patchify(s.noisy, cfg.patch_size) for s in reversed(steps)], dim=1)  # (B, T, K, D)
    labels = torch.tensor(LABELS)
    with torch.no_grad():
        cond = model(noisy, labels).x0
        uncond = model(noisy, torch.full_like(labels, cfg.null_class)).x0
    guided = uncond + cfg_scale * (cond - uncond) if cfg_scale != 1.0 else cond
    for step in steps:
        torch.testing.assert_close(patchify(step.x0, cfg.patch_size), guided[:, step.level - 1])


def test_each_level_is_the_renoised_previous_estimate(make_model):
    model = make_model()
    gammas = model.schedule.gammas
    steps = _run(model, cfg_scale=2.0, clip_denoised=False)
    implied = []
    for previous, step in zip(steps, steps[1:]):
        g = float(gammas[step.level - 1])
        implied.append((step.noisy - g**0.5 * previous.x0) / (1 - g) ** 0.5)  # the fresh ε of this level
    noise = torch.stack([steps[0].noisy, *implied]).flatten(1)  # (T, B·C·S·S)
    corr = torch.corrcoef(noise)
    assert corr[~torch.eye(4, dtype=torch.bool)].abs().max() < 0.25  # fresh noise per level (n = 576 values)
    assert 0.8 < float(noise.std()) < 1.2


def test_generator_and_noise_make_sampling_reproducible(make_model):
    model = make_model("dart_fm")
    a = sample(model, LABELS, generator=torch.Generator().manual_seed(3))
    b = sample(model, LABELS, generator=torch.Generator().manual_seed(3))
    c = sample(model, LABELS, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    x_top = torch.randn(3, 3, 8, 8)
    steps = list(iter_levels(model, LABELS, noise=x_top, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(steps[0].noisy, x_top)  # the pure-noise level is the given noise


@pytest.mark.parametrize("variant, calls", [("dart", 4), ("dart_fm", 4), ("dart_ar", 4 * 16)])
def test_one_backbone_call_per_level_or_per_token(make_model, variant, calls):
    model = make_model(variant)
    rows = []
    hook = model.backbone.register_forward_hook(
        lambda m, args, kwargs, out: rows.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    try:
        _run(model, cfg_scale=2.0)
        assert len(rows) == calls and set(rows) == {6}  # conditional + null rows in one forward
        rows.clear()
        _run(model, cfg_scale=1.0)
        assert set(rows) == {3}  # no guidance, no null rows
    finally:
        hook.remove()


def test_clipping_defaults_to_pixel_space(make_model):
    model = make_model()
    with torch.no_grad():
        model.x0_head.bias.fill_(5.0)
    assert float(sample(model, LABELS, cfg_scale=1.0).abs().max()) <= 1.0
    assert float(sample(model, LABELS, cfg_scale=1.0, clip_denoised=False).max()) > 1.0


def test_caller_modes_are_restored(make_model):
    model = make_model().train()
    with torch.enable_grad():
        for step in iter_levels(model, LABELS):
            assert model.training and torch.is_grad_enabled()
            assert not step.x0.is_inference()
            step.x0.add_(0)  # usable in place outside inference mode


def test_guidance_scales():
    assert guidance_scales(3, 2.0).tolist() == [2.0, 2.0, 2.0]
    assert guidance_scales(3, 5.0, "linear", 1.0).tolist() == [1.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="cfg_schedule"):
        guidance_scales(3, 2.0, "cosine")
    with pytest.raises(ValueError, match="finite real number"):
        guidance_scales(3, "1.1,8.0")
    with pytest.raises(ValueError, match="finite real number"):
        guidance_scales(3, float("nan"))
    for absurd in (1e38, -1.0):  # 1e38 gave saturated (pixels) or inf/NaN (latents) images without a word
        with pytest.raises(ValueError, match=r"cfg_scale must lie in \[0, 1000\]"):
            guidance_scales(3, absurd)
    with pytest.raises(ValueError, match=r"cfg_scale_start must lie in \[0, 1000\]"):
        guidance_scales(3, 4.0, "linear", 1e38)


def test_inputs_are_validated(make_model):
    model = make_model()
    with pytest.raises(ValueError, match="out of range"):
        iter_levels(model, [0, 4])
    with pytest.raises(ValueError, match="empty"):
        iter_levels(model, [])
    with pytest.raises(ValueError, match="noise must be a \\(3, 3, 8, 8\\)"):
        iter_levels(model, LABELS, noise=torch.zeros(2, 3, 8, 8))
    for bad in (float("nan"), float("inf")):  # NaN noise gave NaN images silently
        with pytest.raises(ValueError, match="noise must be finite"):
            iter_levels(model, LABELS, noise=torch.full((3, 3, 8, 8), bad))
