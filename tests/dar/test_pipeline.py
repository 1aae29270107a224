"""DARPipeline contracts on tiny random-init models: streaming == offline, true interleaving, layout, I/O."""

import json

import numpy as np
import pytest
import torch
from dar_test_utils import CLASS_NAMES
from transformers import AutoModelForCausalLM

import dar.pipeline as pipeline_module
from dar.pipeline import DARPipeline, StreamStep, make_grid
from llama_ar import VocabLayout, build_ar_model
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
    torch.testing.assert_close(steps[-1].preview, offline, atol=1e-6, rtol=0)
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
    torch.testing.assert_close(steps[-1].preview, out, atol=1e-6, rtol=0)


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
        ([3], {}, r"out of range.*0\.\.2"),
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


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["tokenizer"][1] == "DARTokenizer"
    assert index["ar_model"][1] == "LlamaForCausalLM"
    loaded = DARPipeline.from_pretrained(tmp_path)
    assert loaded.id2label == CLASS_NAMES
    a = pipe([0, 1], generator=torch.Generator().manual_seed(5), **_kwargs()).images
    b = loaded([0, 1], generator=torch.Generator().manual_seed(5), **_kwargs()).images
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # the AR folder alone is a stock causal LM
    ar_alone = AutoModelForCausalLM.from_pretrained(tmp_path / "ar_model")
    ids = torch.tensor([[pipe.layout.class_token(1), 3, 4]])
    torch.testing.assert_close(ar_alone(ids).logits, pipe.ar_model(ids).logits, atol=1e-6, rtol=0)


def test_mismatched_components_are_refused():
    tokenizer = DARTokenizer.from_preset("tiny")
    ar_model = build_ar_model(
        "tiny", VocabLayout(codebook_size=tokenizer.config.codebook_size + 1, num_classes=2)
    )
    with pytest.raises(ValueError, match="codebook"):
        DARPipeline(tokenizer=tokenizer, ar_model=ar_model)


def test_make_grid_layout():
    images = np.zeros((5, 4, 4, 3))
    images[3] = 1.0
    grid = make_grid(images, nrow=2)
    assert grid.shape == (3 * 6 + 2, 2 * 6 + 2, 3) and grid.dtype == np.uint8
    assert grid[2 + 6 + 1, 2 + 6 + 1, 0] == 255  # image 3 sits in row 1, column 1
    with pytest.raises(ValueError, match="B, H, W, 3"):
        make_grid(np.zeros((4, 4, 3)), nrow=2)
