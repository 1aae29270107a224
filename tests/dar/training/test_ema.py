"""Tests of dar.training.ema: the EMA follows the parameters with the diffusers warm-up; export takes live buffers."""

import pytest
import torch

from dar.training.ema import build_ema, ema_decay_at, ema_model_for_export


def test_ema_tracks_parameters_and_export_takes_live_buffers():
    model = torch.nn.BatchNorm1d(2)
    ema = build_ema(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, torch.full((2,), 1.1))
    model.running_mean.fill_(3.0)
    exported = ema_model_for_export(ema, model)
    assert torch.equal(exported.running_mean, model.running_mean)
    assert torch.allclose(exported.weight, torch.full((2,), 1.1))


def test_ema_warmup_follows_the_diffusers_schedule_and_caps_at_decay():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert ema_decay_at(0.999, 0, warmup=False) == 0.999
    model = torch.nn.Linear(1, 1, bias=False)
    ema = build_ema(model, decay=0.5)
    expected = None
    for n, value in enumerate([4.0, 0.0, 8.0, 2.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        d = ema_decay_at(0.5, n)  # n = updates before this one; the first one copies
        expected = value if expected is None else d * expected + (1 - d) * value
        assert ema.module.weight.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="decay"):
        build_ema(model, decay=1.0)
