"""DARPipeline contracts on tiny random-init models: streaming == offline, true interleaving, layout, I/O."""

import json

import numpy as np
import pytest
import torch
from tiny import CLASS_NAMES
from transformers import AutoModelForCausalLM

import dar.pipeline as pipeline_module
from dar.loading import load_pipeline
from dar.pipeline import DARPipeline, StreamStep
from llama_ar import SamplingOptions, VocabLayout, build_ar_model, write_generation_config
from tokenizer import DARTokenizer


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


def _kwargs(**extra):
    return {"cfg_scale": 2.0, "output_type": "pt", **extra}


def test_last_stream_step_equals_offline_call(pipe):
    offline = pipe([0, 2], generator=torch.Generator().manual_seed(7), **_kwargs()).images
    steps = list(pipe.stream([0, 2], generator=torch.Generator().manual_seed(7), **_kwargs()))
    assert [s.index for s in steps] == list(range(pipe.tokenizer.config.num_steps))
    assert all(isinstance(s, StreamStep) for s in steps)
    assert torch.equal(steps[-1].preview, offline)  # one code path, same models: bitwise
    assert offline.shape == (2, 3, pipe.tokenizer.config.image_size, pipe.tokenizer.config.image_size)
    assert 0 <= offline.min() and offline.max() <= 1
    # codes grow one group per step and intermediate previews differ from the final image
    tps = pipe.tokenizer.config.tokens_per_step
    assert [s.codes.shape[1] for s in steps] == [tps * (i + 1) for i in range(len(steps))]
    assert not torch.allclose(steps[0].preview, steps[-1].preview)


def test_first_preview_arrives_before_group_two_is_sampled(pipe, monkeypatch):
    events = []
    real = pipeline_module.iter_code_groups

    def recording_groups(*args, **kwargs):
        for k, group in enumerate(real(*args, **kwargs)):
            events.append(("group", k))
            yield group

    monkeypatch.setattr(pipeline_module, "iter_code_groups", recording_groups)
    for step in pipe.stream([1], generator=torch.Generator().manual_seed(0), **_kwargs()):
        events.append(("preview", step.index))
        if step.index == 0:
            assert events == [("group", 0), ("preview", 0)], "preview 0 must exist before group 1 is sampled"
    num_steps = pipe.tokenizer.config.num_steps
    assert events == [(kind, k) for k in range(num_steps) for kind in ("group", "preview")]


def test_layout_forces_reference_codes(pipe):
    tps = pipe.tokenizer.config.tokens_per_step
    reference = torch.randint(0, pipe.tokenizer.config.codebook_size, (1, pipe.tokenizer.config.num_tokens))
    prefix = tps + 1  # crosses a group boundary
    steps = list(
        pipe.stream(
            [0, 1],
            generator=torch.Generator().manual_seed(3),
            layout=reference,
            layout_tokens=prefix,
            **_kwargs(),
        )
    )
    codes = steps[-1].codes
    assert torch.equal(codes[:, :prefix], reference[:, :prefix].expand(2, -1))
    # reference images are tokenized first
    images = torch.rand(1, 3, pipe.tokenizer.config.image_size, pipe.tokenizer.config.image_size) * 2 - 1
    ref_codes = pipe.tokenizer.encode(images)
    steps = list(
        pipe.stream(
            [2], generator=torch.Generator().manual_seed(3), layout=images, layout_tokens=tps, **_kwargs()
        )
    )
    assert torch.equal(steps[-1].codes[:, :tps], ref_codes[:, :tps])


def test_partial_steps_sample_fewer_groups(pipe):
    steps = list(
        pipe.stream([0], num_inference_steps=2, generator=torch.Generator().manual_seed(0), **_kwargs())
    )
    assert len(steps) == 2 and steps[-1].codes.shape[1] == 2 * pipe.tokenizer.config.tokens_per_step
    out = pipe([0], num_inference_steps=2, generator=torch.Generator().manual_seed(0), **_kwargs()).images
    assert torch.equal(steps[-1].preview, out)


def test_class_names_and_output_types(pipe):
    by_name = pipe(["cat", "Bear"], generator=torch.Generator().manual_seed(1), **_kwargs()).images
    by_id = pipe([2, 0], generator=torch.Generator().manual_seed(1), **_kwargs()).images
    torch.testing.assert_close(by_name, by_id)
    pil = pipe([0], generator=torch.Generator().manual_seed(1), output_type="pil").images
    assert pil[0].size == (pipe.tokenizer.config.image_size,) * 2
    array = pipe([0], generator=torch.Generator().manual_seed(1), output_type="np").images
    assert array.shape == (1, pipe.tokenizer.config.image_size, pipe.tokenizer.config.image_size, 3)


@pytest.mark.parametrize(
    "labels, kwargs, match",
    [
        (["dragon"], {}, "Unknown class name 'dragon'.*bear"),
        ([3], {}, r"outside \[0, 3\)"),
        (torch.tensor([0.5]), {}, "integer"),
        ([0], {"output_type": "jpeg"}, "output_type"),
        ([0], {"num_inference_steps": 99}, "num_inference_steps"),
        ([0], {"layout_tokens": 4}, "without layout"),
    ],
)
def test_invalid_inputs_name_the_fix(pipe, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(labels, **kwargs)
    with pytest.raises(ValueError, match=match):
        pipe.stream(labels, **kwargs)  # raises at call time, not at the first next()


@pytest.mark.parametrize("generator", [5, "seed", [torch.Generator(), 5], [None, torch.Generator()]])
def test_a_bad_generator_is_named_at_call_time(pipe, generator):
    """Not a raw ``torch.randn() received an invalid combination of arguments``."""
    labels = [0, 1] if isinstance(generator, list) else [0]
    for verb in (pipe, pipe.stream):
        with pytest.raises((TypeError, ValueError), match="generator"):
            verb(labels, generator=generator)


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["tokenizer"][1] == "DARTokenizer"
    assert index["ar_model"][1] == "LlamaForCausalLM"
    loaded = DARPipeline.from_pretrained(tmp_path)
    assert loaded.id2label == CLASS_NAMES
    a = pipe([0, 1], generator=torch.Generator().manual_seed(5), **_kwargs()).images
    b = loaded([0, 1], generator=torch.Generator().manual_seed(5), **_kwargs()).images
    torch.testing.assert_close(a, b)  # reloaded weights may pick other BLAS kernels
    # the AR folder alone is a stock causal LM
    ar_alone = AutoModelForCausalLM.from_pretrained(tmp_path / "ar_model")
    ids = torch.tensor([[pipe.vocab_layout.class_token(1), 3, 4]])
    torch.testing.assert_close(ar_alone(ids).logits, pipe.ar_model(ids).logits)


def test_mismatched_components_are_refused():
    tokenizer = DARTokenizer.from_preset("tiny")
    ar_model = build_ar_model(
        "tiny", VocabLayout(codebook_size=tokenizer.config.codebook_size + 1, num_classes=2)
    )
    with pytest.raises(ValueError, match="codebook"):
        DARPipeline(tokenizer=tokenizer, ar_model=ar_model)


def test_a_list_of_generators_makes_each_image_independent_of_the_batch(pipe):
    def generators(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    # Same codes and noise per image; the float pixels are equal up to fp32 rounding only, since the decoder's
    # oneDNN kernels (DARTokenizer.fast_linear) block the products by batch size (3e-8 apart here).
    together = pipe([0, 1, 2], generator=generators(1, 2, 3), **_kwargs()).images
    alone = pipe([1], generator=generators(2), **_kwargs()).images
    torch.testing.assert_close(together[1:2], alone)
    batched = pipe([0, 1, 2], generator=generators(1, 2, 3), batch_size=2, **_kwargs()).images
    torch.testing.assert_close(batched, together)
    other = pipe([0, 1, 2], generator=generators(4, 5, 6), **_kwargs()).images
    assert (other - together).abs().amax() > 0.1  # another generator: another image
    with pytest.raises(ValueError, match="one per image"):
        pipe([0, 1], generator=generators(1), **_kwargs())


def test_batch_size_splits_the_call_and_one_generator_runs_through_the_batches(pipe):
    whole = pipe([0, 1, 2, 0], generator=torch.Generator().manual_seed(4), **_kwargs()).images
    split = pipe([0, 1, 2, 0], generator=torch.Generator().manual_seed(4), batch_size=2, **_kwargs()).images
    assert split.shape == whole.shape
    first = pipe([0, 1], generator=torch.Generator().manual_seed(4), **_kwargs()).images
    assert torch.equal(split[:2], first)  # batch 1 consumes the generator exactly like a call of its own
    with pytest.raises(ValueError, match="batch_size must be an int"):
        pipe([0], batch_size=0)


def test_diffusers_names_and_conventions(pipe):
    g = torch.Generator().manual_seed(2)
    a = pipe([0, 2], guidance_scale=2.0, num_images_per_prompt=2, generator=g, output_type="pt").images
    b = pipe([0, 0, 2, 2], cfg_scale=2.0, generator=torch.Generator().manual_seed(2), output_type="pt").images
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="not both"):
        pipe([0], cfg_scale=3.0, guidance_scale=2.0)
    seen = []
    pipe([1], callback_on_step_end=lambda p, i, t, kw: seen.append((i, t, kw["latents"].shape)), **_kwargs())
    num_steps = pipe.tokenizer.config.num_steps
    assert [i for i, _, _ in seen] == list(range(num_steps)) and seen[0][2] == (1, 3, 16, 16)
    assert [t for _, t, _ in seen] == sorted(t for _, t, _ in seen)
    np_labels = pipe(np.array([2, 0]), generator=torch.Generator().manual_seed(1), **_kwargs()).images
    int_labels = pipe([np.int64(2), 0], generator=torch.Generator().manual_seed(1), **_kwargs()).images
    assert torch.equal(np_labels, int_labels)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"noise": torch.full((1, 3, 16, 16), float("nan"))}, ValueError, "finite"),
        (
            {"noise": np.zeros((1, 3, 8, 8), dtype=np.float32)},
            ValueError,
            r"noise must be a tensor of shape \(1, 3",
        ),
        ({"cfg_scale": 1e38}, ValueError, r"cfg_scale must lie in \[0, 1000\]"),
        (
            {"layout": torch.zeros(1, 3, 16, 16, dtype=torch.bool), "layout_tokens": 2},
            ValueError,
            "layout must be",
        ),
        ({"not_an_option": 1}, TypeError, "unknown sampling options"),
    ],
)
def test_unclear_inputs_fail_with_the_fix(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe([0], **kwargs)


def test_layout_accepts_uint8_and_pil_references(pipe):
    from PIL import Image

    size = pipe.tokenizer.config.image_size
    pixels = torch.randint(
        0, 256, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    expected = pipe.tokenizer.encode(pixels.float() / 127.5 - 1)[:, :4]
    for reference in (
        pixels,
        Image.fromarray(pixels[0].permute(1, 2, 0).numpy()),
        pixels[0].permute(1, 2, 0).numpy(),
    ):
        codes = list(pipe.stream([1], layout=reference, layout_tokens=4, **_kwargs()))[-1].codes
        assert torch.equal(codes[:, :4], expected)


def test_offload_hooks_fire_on_both_models(pipe, monkeypatch):
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    calls = []

    class Spy(ModelHook):
        def __init__(self, name):
            self.name = name

        def pre_forward(self, module, *args, **kwargs):
            calls.append(self.name)
            return args, kwargs

    for name in ("tokenizer", "ar_model"):
        add_hook_to_module(getattr(pipe, name), Spy(name))
    try:
        list(pipe.stream([0], **_kwargs()))
        pipe([0], **_kwargs())
    finally:
        for name in ("tokenizer", "ar_model"):
            remove_hook_from_module(getattr(pipe, name))
    assert calls.count("ar_model") >= pipe.tokenizer.config.num_tokens  # every AR step goes through forward
    assert (
        calls.count("tokenizer") >= 2 * pipe.tokenizer.config.num_steps
    )  # every decoder step fires the hook


def test_the_ar_half_of_a_folder_loads_strictly(pipe, tmp_path):
    from safetensors.torch import load_file, save_file

    pipe.save_pretrained(tmp_path)
    weights_file = tmp_path / "ar_model" / "model.safetensors"
    weights = load_file(weights_file)
    config_file = tmp_path / "ar_model" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "num_hidden_layers": 3}))  # more layers than the weights
    with pytest.raises(ValueError, match=r"missing \(9\).*model\.layers\.2"):
        DARPipeline.from_pretrained(tmp_path)
    config_file.write_text(json.dumps({**config, "num_hidden_layers": 1}))  # fewer layers
    with pytest.raises(ValueError, match=r"unexpected \(9\).*model\.layers\.1"):
        DARPipeline.from_pretrained(tmp_path)
    config_file.write_text(json.dumps(config))
    save_file({k: v for k, v in weights.items() if k != "lm_head.weight"}, weights_file)
    with pytest.raises(ValueError, match=r"missing \(1\): \['lm_head.weight'\]"):
        DARPipeline.from_pretrained(tmp_path)
    save_file(weights, weights_file)
    weights_file.write_bytes(weights_file.read_bytes()[:-64])
    with pytest.raises(ValueError, match="model.safetensors is damaged"):
        load_pipeline(tmp_path)
    with pytest.raises(FileNotFoundError, match="no pipeline folder"):
        DARPipeline.from_pretrained("runs/missing/pipeline")  # a local-looking path is never a Hub id


def test_diffusers_generic_loader_works_with_custom_pipeline(pipe, tmp_path, monkeypatch):
    from pathlib import Path

    from diffusers import DiffusionPipeline

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    pipe.save_pretrained(tmp_path / "pipe")
    source = Path(pipeline_module.__file__)
    loaded = DiffusionPipeline.from_pretrained(
        tmp_path / "pipe", custom_pipeline=str(source), trust_remote_code=True
    )
    assert type(loaded).__name__ == "DARPipeline"
    a = loaded([1], generator=torch.Generator().manual_seed(3), **_kwargs()).images
    torch.testing.assert_close(a, pipe([1], generator=torch.Generator().manual_seed(3), **_kwargs()).images)


def test_noise_scale_defaults_to_the_tokenizer_config_and_is_one_place(pipe):
    tokenizer = pipe.tokenizer
    cooler = DARTokenizer(**tokenizer.config.replace(noise_scale=0.5).to_dict())
    cooler.load_state_dict(tokenizer.state_dict())
    cool_pipe = DARPipeline(tokenizer=cooler.eval(), ar_model=pipe.ar_model)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    default = cool_pipe([0, 2], generator=g(), **_kwargs()).images
    torch.testing.assert_close(pipe([0, 2], generator=g(), noise_scale=0.5, **_kwargs()).images, default)
    unscaled = pipe([0, 2], generator=g(), **_kwargs()).images
    torch.testing.assert_close(
        cool_pipe([0, 2], generator=g(), noise_scale=1.0, **_kwargs()).images, unscaled
    )
    assert (unscaled - default).abs().amax() > 1e-3
    last = list(pipe.stream([0, 2], generator=g(), noise_scale=0.5, **_kwargs()))[-1]
    torch.testing.assert_close(last.preview, default)
    with pytest.raises(ValueError, match="noise or noise_scale, not both"):
        pipe([0], noise=torch.zeros(1, 3, 16, 16), noise_scale=0.5)
    with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0"):
        pipe([0], noise_scale=-1.0)


def test_the_checkpoints_generation_config_sets_the_sampling_defaults(pipe, tmp_path):
    assert pipe.sampling_defaults == {
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }  # build_ar_model's: neutral
    pipe.save_pretrained(tmp_path)
    neutral = DARPipeline.from_pretrained(tmp_path)
    with torch.no_grad():  # the tiny prior's head starts at zero: uniform logits, which no warper changes
        head = neutral.ar_model.lm_head.weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(0)))
    neutral.save_pretrained(tmp_path)
    write_generation_config(tmp_path / "ar_model", temperature=0.5, top_k=3)
    cool = DARPipeline.from_pretrained(tmp_path)
    assert cool.sampling_defaults == {"temperature": 0.5, "top_k": 3, "top_p": 1.0}
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    labels = [0, 2, 1]
    default = cool(labels, generator=g(), **_kwargs()).images
    explicit = neutral(labels, generator=g(), temperature=0.5, top_k=3, **_kwargs()).images
    torch.testing.assert_close(default, explicit)
    torch.testing.assert_close(list(cool.stream(labels, generator=g(), **_kwargs()))[-1].preview, default)
    seen = {}

    def codes_of(name):
        return lambda p, step, t, state: seen.__setitem__(name, state["codes"])

    cool(labels, generator=g(), callback_on_step_end=codes_of("cool"), **_kwargs())
    neutral(labels, generator=g(), callback_on_step_end=codes_of("neutral"), **_kwargs())
    assert not torch.equal(seen["cool"], seen["neutral"])  # the defaults changed what was drawn
    # keywords override one default at a time; an options object is used as given
    cool(labels, generator=g(), temperature=1.0, callback_on_step_end=codes_of("cool_t1"), **_kwargs())
    neutral(labels, generator=g(), top_k=3, callback_on_step_end=codes_of("neutral_k3"), **_kwargs())
    assert torch.equal(seen["cool_t1"], seen["neutral_k3"])
    options = SamplingOptions(cfg_scale=2.0)
    cool(labels, generator=g(), options=options, callback_on_step_end=codes_of("cool_o"), output_type="pt")
    assert torch.equal(seen["cool_o"], seen["neutral"])
    config_file = tmp_path / "ar_model" / "generation_config.json"
    config_file.write_text(config_file.read_text().replace('"top_k": 3', '"top_k": -2'))
    with pytest.raises(ValueError, match="generation_config.json sets .*write_generation_config"):
        DARPipeline.from_pretrained(tmp_path)
