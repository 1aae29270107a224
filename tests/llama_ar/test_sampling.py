"""Contracts of llama_ar.sampling: cached decoding equals full forwards, batched CFG, prefixes, streaming."""

import pytest
import torch

from llama_ar import iter_code_groups, sample_codes
from llama_ar.options import cfg_scales

N = 16  # codes per image in these tests


def full_logits(model, layout, labels, codes, null=False):
    """Code logits after [class, codes...] from one uncached forward: (B, K) for the next code."""
    tokens = layout.null_tokens(len(labels)) if null else layout.class_tokens(labels)
    ids = layout.build_inputs(tokens, codes)
    with torch.no_grad():
        logits = model(ids, position_ids=torch.arange(ids.shape[1])[None]).logits
    return logits[:, -1, : layout.codebook_size].float()


def guided_tolerance(scale: float) -> dict:
    """Default fp32 tolerance on each branch's logits, carried through uncond + s·(cond − uncond): the absolute
    error of the mix is at most (1 + 2|s|) times that of a branch."""
    return {"atol": 1e-5 * (1 + 2 * abs(scale)), "rtol": 1.3e-6 * (1 + 2 * abs(scale))}


def record(store):
    return lambda k, logits: store.append((k, logits.clone()))


def count_backbone_calls(model):
    calls = []
    model.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    return calls


def test_never_samples_a_non_code_id(tiny_model, layout):
    # Push every non-code logit far above the code logits: a sampler that forgot the mask would pick them.
    def bias(module, inputs, output):
        output = output.clone()
        output[..., layout.codebook_size :] += 1e4
        return output

    tiny_model.lm_head.register_forward_hook(bias)
    ids = layout.build_inputs(layout.class_tokens([0]), torch.zeros(1, 3, dtype=torch.long))
    with torch.no_grad():
        assert tiny_model(ids).logits.argmax(-1).min() >= layout.codebook_size  # the trap is armed
    for cfg in (1.0, 3.0):
        codes = sample_codes(
            tiny_model,
            [0, 1, 2, 3],
            N,
            cfg_scale=cfg,
            temperature=2.0,
            generator=torch.Generator().manual_seed(0),
        )
        assert codes.dtype == torch.int64 and codes.shape == (4, N)
        assert int(codes.min()) >= 0 and int(codes.max()) < layout.codebook_size


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(class_labels=[0, 4]), ValueError, r"outside \[0, 4\)"),
        (dict(class_labels=torch.tensor([0.0, 1.0])), ValueError, "integer tensor"),
        (dict(num_tokens=15, tokens_per_step=4), ValueError, "multiple of tokens_per_step"),
        (dict(num_tokens=32, tokens_per_step=4), ValueError, "capacity"),
        (dict(prefix_codes=torch.zeros(N, dtype=torch.long)), ValueError, "shorter than num_tokens"),
        (dict(prefix_codes=torch.full((3,), 32)), ValueError, r"\[0, 32\)"),
        (dict(prefix_codes=torch.zeros(3, 2, dtype=torch.long)), ValueError, "shape"),
        (dict(cfg_schedule="cosine"), ValueError, "cfg_schedule must be one of"),
        (dict(temperature=0.0), ValueError, "top_k=1"),
        (dict(cfg_scale="4"), TypeError, "real number"),
        (dict(cfg_scale=float("nan")), ValueError, "finite"),
        (dict(cfg_interval=-2), ValueError, "cfg_interval"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(cache="paged"), ValueError, "cache must be one of"),
    ],
)
def test_invalid_arguments_raise_at_call_time(tiny_model, kwargs, error, match):
    args = dict(class_labels=[0, 1], num_tokens=N, tokens_per_step=4) | kwargs
    with pytest.raises(error, match=match):
        iter_code_groups(tiny_model, **args)  # no next(): validation must not be lazy


@pytest.mark.parametrize("cache", ["dynamic", "static", "preallocated"])
def test_greedy_cached_decoding_equals_argmax_of_full_forwards(tiny_model, layout, cache):
    labels = [0, 3]
    codes = sample_codes(tiny_model, labels, N, cfg_scale=1.0, top_k=1, cache=cache)
    for k in range(N):
        expected = full_logits(tiny_model, layout, labels, codes[:, :k]).argmax(-1)
        assert torch.equal(codes[:, k], expected), f"code {k}"


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_batched_cfg_mixes_separate_conditional_and_null_forwards(tiny_model, layout, schedule):
    labels = [1, 2, 3]
    seen = []
    codes = sample_codes(
        tiny_model,
        labels,
        N,
        cfg_scale=3.0,
        cfg_schedule=schedule,
        cfg_scale_start=1.5,
        generator=torch.Generator().manual_seed(1),
        logits_callback=record(seen),
    )
    scales = cfg_scales(N, 3.0, schedule, 1.5)
    assert [k for k, _ in seen] == list(range(N))
    for k, mixed in seen:
        cond = full_logits(tiny_model, layout, labels, codes[:, :k])
        uncond = full_logits(tiny_model, layout, labels, codes[:, :k], null=True)
        torch.testing.assert_close(mixed, uncond + scales[k] * (cond - uncond), **guided_tolerance(3.0))


def test_cfg_runs_one_forward_of_2b_rows_and_scale_one_runs_b_rows(tiny_model, layout):
    calls = count_backbone_calls(tiny_model)
    sample_codes(tiny_model, [0, 1], N, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert len(calls) == N and {shape[0] for shape in calls} == {4}
    calls.clear()
    seen = []
    codes = sample_codes(
        tiny_model,
        [0, 1],
        N,
        cfg_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        logits_callback=record(seen),
    )
    assert len(calls) == N and {shape[0] for shape in calls} == {2}
    for k, logits in seen:  # unguided = plain conditional logits
        torch.testing.assert_close(logits, full_logits(tiny_model, layout, [0, 1], codes[:, :k]))


def test_cfg_interval_switches_to_conditional_logits_after_the_index(tiny_model, layout):
    seen = []
    codes = sample_codes(
        tiny_model,
        [2],
        N,
        cfg_scale=4.0,
        cfg_interval=5,
        generator=torch.Generator().manual_seed(0),
        logits_callback=record(seen),
    )
    for k, logits in seen:
        cond = full_logits(tiny_model, layout, [2], codes[:, :k])
        uncond = full_logits(tiny_model, layout, [2], codes[:, :k], null=True)
        expected = cond if k > 5 else uncond + 4.0 * (cond - uncond)
        torch.testing.assert_close(logits, expected, **guided_tolerance(1.0 if k > 5 else 4.0))


def test_linear_schedule_runs_from_start_at_code_zero_to_scale_at_the_last_code():
    scales = cfg_scales(256, 8.0, "linear", 1.1)
    assert scales.shape == (256,)
    assert scales[0].item() == pytest.approx(1.1) and scales[-1].item() == pytest.approx(8.0)
    assert bool((scales.diff() > 0).all())
    assert torch.equal(cfg_scales(4, 2.5), torch.full((4,), 2.5))


def test_same_generator_same_codes_different_seed_different_codes(tiny_model):
    def draw(seed):
        return sample_codes(
            tiny_model, [0, 1, 2], N, cfg_scale=2.0, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


@pytest.mark.parametrize("shared", [True, False])
def test_prefix_codes_are_kept_and_condition_the_rest(tiny_model, layout, shared):
    labels = [1, 2]
    prefix = torch.tensor([5, 9, 31, 0, 7]) if shared else torch.randint(0, layout.codebook_size, (2, 5))
    codes = sample_codes(tiny_model, labels, N, cfg_scale=2.0, top_k=1, prefix_codes=prefix)
    assert torch.equal(codes[:, :5], prefix.expand(2, -1))
    for k in range(5, N):
        cond = full_logits(tiny_model, layout, labels, codes[:, :k])
        uncond = full_logits(tiny_model, layout, labels, codes[:, :k], null=True)
        assert torch.equal(codes[:, k], (uncond + 2.0 * (cond - uncond)).argmax(-1)), f"code {k}"


def test_groups_stream_in_order_as_soon_as_their_last_code_exists(tiny_model):
    calls = count_backbone_calls(tiny_model)
    prefix, step = 6, 4
    stream = iter_code_groups(
        tiny_model,
        [0, 3],
        N,
        step,
        cfg_scale=2.0,
        generator=torch.Generator().manual_seed(3),
        prefix_codes=torch.arange(prefix),
    )
    groups, forwards_at_yield = [], []
    for group in stream:
        groups.append(group)
        forwards_at_yield.append(len(calls))
    assert [g.shape for g in groups] == [(2, step)] * (N // step)
    # group 0 is covered by the prefix (after the prefill); group g needs the forward that predicts its last code
    assert forwards_at_yield == [1] + [(g + 1) * step - prefix for g in range(1, N // step)]
    again = sample_codes(
        tiny_model,
        [0, 3],
        N,
        cfg_scale=2.0,
        generator=torch.Generator().manual_seed(3),
        prefix_codes=torch.arange(prefix),
    )
    assert torch.equal(torch.cat(groups, dim=1), again)


@pytest.mark.parametrize("cache", ["static", "preallocated"])
def test_other_caches_match_the_dynamic_cache(tiny_model, cache):
    def run(cache):
        seen = []
        codes = sample_codes(
            tiny_model,
            [0, 1, 2],
            N,
            cfg_scale=2.0,
            cfg_schedule="linear",
            generator=torch.Generator().manual_seed(5),
            prefix_codes=torch.tensor([3, 1, 4]),  # a multi-token prefill exercises the causal mask
            cache=cache,
            logits_callback=record(seen),
        )
        return codes, torch.stack([logits for _, logits in seen])

    dynamic_codes, dynamic_logits = run("dynamic")
    other_codes, other_logits = run(cache)
    assert torch.equal(dynamic_codes, other_codes)
    torch.testing.assert_close(other_logits, dynamic_logits)


def test_model_mode_and_grad_mode_are_restored_between_groups(tiny_model):
    tiny_model.train()
    tiny_model.model.layers[0].eval()  # a mixed state must survive too
    modes = [m.training for m in tiny_model.modules()]
    for _ in iter_code_groups(tiny_model, [0], N, 4, generator=torch.Generator().manual_seed(0)):
        assert [m.training for m in tiny_model.modules()] == modes
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert [m.training for m in tiny_model.modules()] == modes


def test_sampling_reads_the_layout_from_a_reloaded_model(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    tiny_model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    expected = sample_codes(tiny_model, [1], N, cfg_scale=3.0, top_k=1)
    assert torch.equal(sample_codes(loaded, [1], N, cfg_scale=3.0, top_k=1), expected)


def test_a_backbone_that_ignores_the_cache_keyword_is_an_error_not_wrong_codes(tiny_model):
    # transformers 5.40 drops `past_key_values=` into **kwargs and builds a fresh cache per call; an older
    # release ignores `cache=`. Simulate a release that ignores whichever keyword the sampler passes.
    forward = tiny_model.model.forward

    def forgetful(*args, **kwargs):
        kwargs.pop("cache", None)
        kwargs.pop("past_key_values", None)
        return forward(*args, **kwargs)

    tiny_model.model.forward = forgetful
    with pytest.raises(RuntimeError, match=r"transformers>=5\.24"):
        sample_codes(tiny_model, [0], N, cfg_scale=1.0, generator=torch.Generator().manual_seed(0))
