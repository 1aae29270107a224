"""Contracts of llama_ar.generation: stock generate() samples valid codes and reproduces sample_codes."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from llama_ar import (
    CFGScheduleLogitsProcessor,
    VocabLayout,
    build_generation_config,
    class_prompt,
    null_prompt,
    sample_codes,
    write_generation_config,
)

N = 16  # codes per image of the tiny fixture model
DEMO_AR = Path(__file__).resolve().parents[2] / "checkpoints" / "dar-animals" / "ar_model"


def arm_non_code_trap(model, layout):
    """Push every class / null logit far above the code logits: an unmasked sampler would draw them."""

    def bias(module, inputs, output):
        output = output.clone()
        output[..., layout.codebook_size :] += 1e4
        return output

    model.lm_head.register_forward_hook(bias)


def assert_codes(codes, layout, batch, num):
    assert codes.dtype == torch.int64 and codes.shape == (batch, num)
    assert int(codes.min()) >= 0 and int(codes.max()) < layout.codebook_size


def test_generation_config_samples_all_codes_and_suppresses_class_and_null_ids(layout):
    config = build_generation_config(layout, 256, temperature=0.9, top_p=0.95)
    assert config.max_new_tokens == 256 and config.do_sample is True
    assert config.top_k == 0 and config.top_p == 0.95 and config.temperature == 0.9
    assert config.suppress_tokens == list(range(layout.codebook_size, layout.vocab_size))
    assert layout.null_token in config.suppress_tokens and layout.class_token(0) in config.suppress_tokens
    assert config.guidance_scale is None and config.eos_token_id is None
    with pytest.raises(ValueError, match="top_k"):
        build_generation_config(layout, 16, top_k=-1)


def test_saved_model_generates_only_codes_with_plain_generate(tiny_model, layout, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == N and saved["do_sample"] is True and saved["top_k"] == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    arm_non_code_trap(model, layout)
    prompt = class_prompt(layout, [0, 1, 2, 3])
    out = model.generate(prompt)
    assert out.shape == (4, 1 + N) and torch.equal(out[:, :1], prompt)
    assert_codes(out[:, 1:], layout, 4, N)


def test_write_generation_config_repairs_an_existing_folder(tiny_model, layout, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"_from_model_config": true, "use_cache": true}')
    written = write_generation_config(tmp_path, num_tokens=12, top_k=5)
    assert written.max_new_tokens == 12 and written.top_k == 5
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    arm_non_code_trap(model, layout)
    out = model.generate(class_prompt(layout, [1, 3]))
    assert_codes(out[:, 1:], layout, 2, 12)
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        write_generation_config(tmp_path, num_tokens=17)
    with pytest.raises(FileNotFoundError, match="ar_model/"):
        write_generation_config(tmp_path / "missing")


@pytest.mark.parametrize(
    "schedule, interval",
    [("constant", -1), ("linear", -1), ("linear", 6), ("constant", 0)],
)
def test_greedy_generate_with_the_processor_equals_sample_codes(tiny_model, layout, schedule, interval):
    labels = [0, 1, 3]
    kwargs = dict(cfg_scale=3.0, cfg_schedule=schedule, cfg_scale_start=1.5, cfg_interval=interval)
    expected = sample_codes(tiny_model, labels, N, top_k=1, **kwargs)
    processor = CFGScheduleLogitsProcessor(tiny_model, **kwargs)
    out = tiny_model.generate(class_prompt(layout, labels), logits_processor=[processor], top_k=1)
    assert torch.equal(out[:, 1:], expected)


def test_stock_constant_guidance_with_the_null_prompt_equals_sample_codes(tiny_model, layout):
    labels = [2, 0]
    expected = sample_codes(tiny_model, labels, N, cfg_scale=2.5, top_k=1)
    out = tiny_model.generate(
        class_prompt(layout, labels), guidance_scale=2.5, negative_prompt_ids=null_prompt(layout, 2), top_k=1
    )
    assert torch.equal(out[:, 1:], expected)


def test_prompt_codes_are_forced_in_both_guidance_branches(tiny_model, layout):
    labels, prefix = [1, 2], torch.tensor([[5, 9, 31, 0], [7, 7, 1, 2]])
    kwargs = dict(cfg_scale=4.0, cfg_schedule="linear", cfg_scale_start=1.1)
    expected = sample_codes(tiny_model, labels, N, top_k=1, prefix_codes=prefix, **kwargs)
    prompt = torch.cat([class_prompt(layout, labels), prefix], dim=1)
    processor = CFGScheduleLogitsProcessor(tiny_model, **kwargs)
    out = tiny_model.generate(prompt, logits_processor=[processor], top_k=1, max_new_tokens=N - 4)
    assert torch.equal(out[:, 1:], expected)


def test_one_processor_serves_successive_generate_calls(tiny_model, layout):
    processor = CFGScheduleLogitsProcessor(tiny_model, 3.0, "linear")
    first = tiny_model.generate(class_prompt(layout, [0, 1]), logits_processor=[processor], top_k=1)
    second = tiny_model.generate(class_prompt(layout, [3]), logits_processor=[processor], top_k=1)
    assert torch.equal(
        second[:, 1:], sample_codes(tiny_model, [3], N, cfg_scale=3.0, cfg_schedule="linear", top_k=1)
    )
    assert torch.equal(
        first[:, 1:], sample_codes(tiny_model, [0, 1], N, cfg_scale=3.0, cfg_schedule="linear", top_k=1)
    )
    # a short call, then one whose prompt is longer than where the previous call stopped
    tiny_model.generate(class_prompt(layout, [1, 2]), logits_processor=[processor], top_k=1, max_new_tokens=2)
    prompt = torch.cat([class_prompt(layout, [1, 2]), torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])], dim=1)
    third = tiny_model.generate(prompt, logits_processor=[processor], top_k=1, max_new_tokens=N - 4)
    expected = sample_codes(
        tiny_model, [1, 2], N, cfg_scale=3.0, cfg_schedule="linear", top_k=1, prefix_codes=prompt[:, 1:]
    )
    assert torch.equal(third[:, 1:], expected)


def test_sampled_generate_with_guidance_draws_only_codes(tiny_model, layout):
    arm_non_code_trap(tiny_model, layout)  # the null sequence's logits go through the trapped head too
    processor = CFGScheduleLogitsProcessor(tiny_model, 8.0, "linear", cfg_scale_start=1.1, cfg_interval=10)
    out = tiny_model.generate(
        class_prompt(layout, [0, 1, 2, 3]), logits_processor=[processor], temperature=2.0
    )
    assert_codes(out[:, 1:], layout, 4, N)


def test_null_sequence_stops_running_after_the_cfg_interval(tiny_model, layout):
    rows = []
    tiny_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    processor = CFGScheduleLogitsProcessor(tiny_model, 2.0, cfg_interval=3)
    tiny_model.generate(class_prompt(layout, [0, 1]), logits_processor=[processor], top_k=1)
    # generate: N conditional forwards (prefill + N − 1 steps); processor: null forwards for codes 0 … 3
    assert len(rows) == N + 4 and set(rows) == {2}


def test_processor_refuses_bad_settings_and_too_many_codes(tiny_model, layout):
    with pytest.raises(ValueError, match="cfg_interval"):
        CFGScheduleLogitsProcessor(tiny_model, 2.0, cfg_interval=-2)
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        CFGScheduleLogitsProcessor(tiny_model, 2.0, num_tokens=17)
    with pytest.raises(ValueError, match="cfg_schedule must be one of"):
        CFGScheduleLogitsProcessor(tiny_model, 2.0, "cosine")
    processor = CFGScheduleLogitsProcessor(tiny_model, 2.0, num_tokens=8)
    with pytest.raises(ValueError, match="num_tokens=8"):
        tiny_model.generate(class_prompt(layout, [0]), logits_processor=[processor], max_new_tokens=9)


def test_shipped_demo_model_generates_its_number_of_codes_with_plain_generate():
    model = AutoModelForCausalLM.from_pretrained(DEMO_AR)
    layout = VocabLayout.from_config(model.config)
    num_tokens = model.config.max_position_embeddings - 1
    assert model.generation_config.max_new_tokens == num_tokens
    arm_non_code_trap(model, layout)
    out = model.generate(class_prompt(layout, list(range(layout.num_classes))))
    assert_codes(out[:, 1:], layout, layout.num_classes, num_tokens)
