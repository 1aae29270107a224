"""Tests of DARTokenizer.decode / stream: prefixes, equivalences, previews, laziness, the time grid."""

import pytest
import torch
from tiny import random_images

from tokenizer import DecodeStep
from tokenizer.flow import sampling_times
from tokenizer.sampler import adams2_step, euler_step


def _codes(tok, batch=2, seed=0):
    return tok.encode(random_images(batch, tok.config.image_size, seed=seed))


def _noise(tok, batch=2, seed=1):
    size = tok.config.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_decode_shape_and_prefixes_of_whole_groups(tiny):
    codes, tps = _codes(tiny), tiny.config.tokens_per_step
    assert tiny.decode(codes, noise=_noise(tiny)).shape == (2, 3, 16, 16)
    for groups in (1, 2, 3):
        image = tiny.decode(codes[:, : groups * tps], noise=_noise(tiny))
        assert image.shape == (2, 3, 16, 16) and torch.isfinite(image).all()
    for bad in (codes[:, : tps + 1], codes[:, :0], torch.cat([codes, codes[:, :tps]], dim=1)):
        with pytest.raises(ValueError, match="whole number of groups"):
            tiny.decode(bad)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.full((1, 16), 64), r"\[0, 64\)"),
        (torch.full((1, 16), -1), r"\[0, 64\)"),
        (torch.zeros(1, 16, dtype=torch.float32), "integer"),
        (torch.zeros(16, dtype=torch.int64), r"\(B, n\)"),
    ],
)
def test_decode_rejects_bad_codes(tiny, codes, message):
    with pytest.raises(ValueError, match=message):
        tiny.decode(codes)


def test_num_steps_truncates_to_the_first_groups(tiny):
    codes = _codes(tiny)
    a = tiny.decode(codes, num_steps=2, noise=_noise(tiny))
    b = tiny.decode(codes[:, :8], noise=_noise(tiny))
    assert torch.equal(a, b)
    assert not torch.allclose(a, tiny.decode(codes, noise=_noise(tiny)))
    with pytest.raises(ValueError, match="num_steps"):
        tiny.decode(codes, num_steps=0)


def test_last_stream_step_equals_decode_for_noise_and_generator(tiny):
    codes = _codes(tiny)
    steps = list(tiny.stream(codes, noise=_noise(tiny)))
    assert len(steps) == tiny.config.num_steps and all(isinstance(s, DecodeStep) for s in steps)
    assert torch.equal(steps[-1].sample, tiny.decode(codes, noise=_noise(tiny)))
    last = list(tiny.stream(codes, generator=torch.Generator().manual_seed(7)))[-1]
    assert torch.equal(last.sample, tiny.decode(codes, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(last.sample, tiny.decode(codes, generator=torch.Generator().manual_seed(8)))


def test_steps_report_times_codes_and_follow_the_sampler(tiny):
    codes, tps, scale = _codes(tiny), tiny.config.tokens_per_step, tiny.config.data_scale
    captured = []
    hook = tiny.decoder.register_forward_hook(lambda m, args, out: captured.append((args[0], out.velocity)))
    steps = list(tiny.stream(codes, noise=_noise(tiny)))
    hook.remove()
    times = sampling_times(4, 4, tiny.config.time_shift)
    previous_v = None
    for k, step in enumerate(steps):
        x_t, v = captured[k]
        assert step.index == k and step.t == pytest.approx(times[k].item())
        assert step.t_next == pytest.approx(times[k + 1].item())
        assert torch.equal(step.codes, codes[:, : (k + 1) * tps])
        torch.testing.assert_close(step.preview, (x_t + (1 - step.t) * v) / scale)
        expected_next = adams2_step(x_t, v, previous_v, times[k], times[k + 1])
        torch.testing.assert_close(step.sample, expected_next / scale)
        if k + 1 < len(steps):
            torch.testing.assert_close(captured[k + 1][0], expected_next)
        previous_v = v
    assert steps[-1].t_next == 1.0
    torch.testing.assert_close(captured[0][0], _noise(tiny))


def test_euler_sampler_option(tiny):
    codes = _codes(tiny)
    captured = []
    hook = tiny.decoder.register_forward_hook(lambda m, args, out: captured.append((args[0], out.velocity)))
    steps = list(tiny.stream(codes, noise=_noise(tiny), sampler="euler"))
    hook.remove()
    times = sampling_times(4, 4, tiny.config.time_shift)
    x_t, v = captured[1]
    torch.testing.assert_close(
        steps[1].sample * tiny.config.data_scale, euler_step(x_t, v, times[1], times[2])
    )
    assert not torch.allclose(steps[-1].sample, tiny.decode(codes, noise=_noise(tiny)))


def test_iterable_is_consumed_lazily_and_matches_tensor_stream(tiny):
    codes, tps = _codes(tiny), tiny.config.tokens_per_step
    pulled = []

    def chunks():
        for k in range(4):
            pulled.append(k)
            yield codes[:, k * tps : (k + 1) * tps]

    reference = list(tiny.stream(codes, noise=_noise(tiny)))
    for k, step in enumerate(tiny.stream(chunks(), noise=_noise(tiny))):
        assert pulled == list(range(k + 1)), "chunk k+1 was requested before step k was yielded"
        assert torch.equal(step.sample, reference[k].sample)
        assert torch.equal(step.preview, reference[k].preview)


def test_iterable_with_fewer_groups_uses_the_partial_time_grid(tiny):
    codes, tps = _codes(tiny), tiny.config.tokens_per_step
    chunks = iter([codes[:, :tps], codes[:, tps : 2 * tps]])
    steps = list(tiny.stream(chunks, noise=_noise(tiny), num_groups=2))
    assert steps[-1].t_next == 1.0
    assert torch.equal(steps[-1].sample, tiny.decode(codes[:, : 2 * tps], noise=_noise(tiny)))


def test_iterable_errors(tiny):
    codes, tps = _codes(tiny), tiny.config.tokens_per_step
    with pytest.raises(ValueError, match="ended after 1 groups"):
        list(tiny.stream(iter([codes[:, :tps]]), num_groups=2))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        list(tiny.stream(iter([codes[:, : tps + 1]])))
    with pytest.raises(ValueError, match="num_groups"):
        tiny.stream(iter([]), num_groups=5)
    with pytest.raises(ValueError, match="noise"):
        tiny.stream(codes, noise=torch.zeros(2, 3, 8, 8))


def test_stream_does_not_leak_no_grad_into_the_caller(tiny):
    for _ in tiny.stream(_codes(tiny)):
        assert torch.is_grad_enabled()
