"""Contracts of llama_ar.layout.VocabLayout: id ranges, validation, serialisation into the LlamaConfig."""

import pytest
import torch

from llama_ar import ARConfig, VocabLayout
from llama_ar.layout import CONFIG_KEY


def test_id_ranges_follow_codes_classes_null():
    layout = VocabLayout(codebook_size=16384, num_classes=1000)
    assert layout.class_token(0) == 16384
    assert layout.class_token(999) == 17383
    assert layout.null_token == 17384
    assert layout.vocab_size == 17385
    assert layout.is_code(torch.tensor([0, 16383, 16384, 17384])).tolist() == [True, True, False, False]


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_constructor_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive int"):
        VocabLayout(bad, 10)


def test_class_tokens_accepts_ints_lists_and_int_tensors(layout):
    expected = [layout.codebook_size + 1, layout.codebook_size + 3]
    assert layout.class_tokens([1, 3]).tolist() == expected
    assert layout.class_tokens(torch.tensor([1, 3], dtype=torch.int32)).tolist() == expected
    assert layout.class_tokens(2).tolist() == [layout.codebook_size + 2]
    assert layout.class_tokens(torch.tensor([1, 3])).dtype == torch.int64


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([0.0, 1.0]), r"integer tensor.*long\(\)"),
        ([0, 4], r"outside \[0, 4\)"),
        (torch.tensor([-1]), r"outside \[0, 4\)"),
        ([1.0], "must be ints"),
        (torch.tensor([[0, 1]]), r"shape \(B,\)"),
        ([], "empty"),
    ],
)
def test_class_tokens_rejects_bad_labels(layout, labels, match):
    with pytest.raises(ValueError, match=match):
        layout.class_tokens(labels)


def test_class_token_rejects_out_of_range(layout):
    with pytest.raises(ValueError, match="outside"):
        layout.class_token(layout.num_classes)


def test_build_inputs_puts_class_first_and_checks_codes(layout):
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    tokens = layout.class_tokens([0, 2])
    ids = layout.build_inputs(tokens, codes)
    assert ids.tolist() == [[32, 1, 2, 3], [34, 4, 5, 6]]
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        layout.build_inputs(tokens, codes + 30)
    with pytest.raises(ValueError, match="class or null"):
        layout.build_inputs(torch.tensor([1, 2]), codes)


def test_mask_to_codes_blocks_every_non_code_id(layout):
    logits = torch.randn(2, 5, layout.vocab_size)
    masked = layout.mask_to_codes(logits)
    assert torch.equal(masked[..., : layout.codebook_size], logits[..., : layout.codebook_size])
    assert torch.isneginf(masked[..., layout.codebook_size :]).all()
    assert bool((masked.argmax(-1) < layout.codebook_size).all())


def test_dict_round_trip_keeps_class_names(layout):
    data = layout.to_dict()
    assert data["id2label"]["3"] == "class-3"  # JSON-style string keys
    again = VocabLayout.from_dict(data)
    assert again == layout and again.id2label == layout.id2label
    with pytest.raises(ValueError, match="unknown VocabLayout keys"):
        VocabLayout.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="outside"):
        VocabLayout(32, 4, id2label={7: "x"})


def test_layout_is_stored_in_and_read_from_the_llama_config(layout):
    config = ARConfig.from_preset("tiny").to_llama_config(layout)
    assert getattr(config, CONFIG_KEY) == layout.to_dict()
    assert config.vocab_size == layout.vocab_size
    assert VocabLayout.from_config(config) == layout


def test_from_config_errors_name_the_fix(layout):
    from transformers import LlamaConfig

    with pytest.raises(ValueError, match="attach_to"):
        VocabLayout.from_config(LlamaConfig(hidden_size=64, num_attention_heads=2, vocab_size=37))
    config = ARConfig.from_preset("tiny").to_llama_config(layout)
    config.vocab_size = 99
    with pytest.raises(ValueError, match="vocab_size"):
        VocabLayout.from_config(config)
