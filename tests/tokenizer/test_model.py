"""Tests of tokenizer/model.py: construction, encode, input validation, save/load, parameter counts."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import random_images

from tokenizer import TOKENIZER_PRESETS, DARTokenizer, TokenizerConfig, split_codebook, with_noise_scale


def test_from_preset_config_and_overrides():
    tok = DARTokenizer.from_preset("tiny", codebook_size=32)
    assert isinstance(tok.config, TokenizerConfig)
    assert tok.config.codebook_size == 32 and tok.config.tokens_per_step == 4
    assert DARTokenizer.from_config(tok.config).config == tok.config
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        DARTokenizer.from_preset("huge")
    with pytest.raises(ValueError, match="unknown TokenizerConfig fields"):
        DARTokenizer.from_preset("tiny", num_codes=3)


def test_encode_shape_dtype_range_and_determinism(tiny):
    images = random_images(3, 16)
    codes = tiny.encode(images)
    assert codes.shape == (3, tiny.config.num_tokens) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < tiny.config.codebook_size
    assert torch.equal(codes, tiny.encode(images))
    assert len(codes.unique()) > 1


def test_encode_is_causal_in_the_queries(tiny):
    images = random_images(2, 16)
    before = tiny.encode(images)
    with torch.no_grad():
        tiny.encoder.query_embedding.weight[8:].normal_()
    assert torch.equal(tiny.encode(images)[:, :8], before[:, :8])


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.zeros(2, 1, 16, 16), ValueError, r"\(B, 3, 16, 16\)"),
        (torch.zeros(2, 3, 32, 32), ValueError, r"\(B, 3, 16, 16\)"),
        (torch.zeros(3, 16, 16), ValueError, r"\(B, 3, 16, 16\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), ValueError, "floating"),
        (torch.full((2, 3, 16, 16), 2.0), ValueError, r"\[-1, 1\]"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_encode_rejects_bad_images(tiny, images, error, message):
    with pytest.raises(error, match=message):
        tiny.encode(images)


def test_training_losses_validate_images_too(tiny):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        tiny.training_losses(torch.full((1, 3, 16, 16), 255.0))


def test_save_pretrained_round_trip_reproduces_decode(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_tokens"] == 16 and config["_class_name"] == "DARTokenizer"
    loaded = DARTokenizer.from_pretrained(tmp_path)
    assert loaded.config == tiny.config and not loaded.training
    codes = tiny.encode(random_images(2, 16))
    assert torch.equal(loaded.encode(random_images(2, 16)), codes)
    a = tiny.decode(codes, generator=torch.Generator().manual_seed(0))
    b = loaded.decode(codes, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, a)


def _weights_file(folder):
    (path,) = list(folder.glob("*.safetensors"))
    return path


def test_from_pretrained_rejects_missing_and_extra_keys(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    path = _weights_file(tmp_path)
    weights = load_file(path)

    missing = dict(weights)
    missing.pop("decoder.conv_in.bias")
    save_file(missing, path)
    with pytest.raises(ValueError, match=r"missing \(1\): \['decoder\.conv_in\.bias'\]"):
        DARTokenizer.from_pretrained(tmp_path)

    save_file({**weights, "decoder.extra.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"unexpected \(1\): \['decoder\.extra\.weight'\]"):
        DARTokenizer.from_pretrained(tmp_path)

    save_file({**weights, "decoder.conv_in.bias": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"misshaped.*decoder.conv_in.bias") as error:
        DARTokenizer.from_pretrained(tmp_path)
    assert "ignore_mismatched_sizes" not in str(error.value)  # never suggest loading random weights

    path.write_bytes(path.read_bytes()[:-100])  # a truncated file is named
    with pytest.raises(ValueError, match=f"{path.name} is damaged"):
        DARTokenizer.from_pretrained(tmp_path)


def test_from_pretrained_never_looks_up_a_local_looking_path_on_the_hub(tmp_path):
    for missing in (tmp_path / "nowhere", "./runs/nowhere", "runs/demo/export/tokenizer"):
        with pytest.raises(FileNotFoundError, match="no tokenizer folder"):
            DARTokenizer.from_pretrained(missing)


def test_tokenizer_v1_parameter_counts_on_meta_device():
    # The codebook is an EMA buffer in vector-quantize-pytorch (not an nn.Parameter), so it is added by hand to
    # compare with the official count, where quantize.embedding.weight (16384 x 8) is a parameter.
    counts = {}
    for repa_layer in (8, None):
        with torch.device("meta"):
            tok = DARTokenizer.from_preset("tokenizer_v1", repa_layer=repa_layer)
        assert tok.quantizer.vq.codebook.shape == (16384, 8)
        counts[repa_layer] = sum(p.numel() for p in tok.parameters()) + tok.quantizer.vq.codebook.numel()
    assert counts[8] == 307_444_672
    assert counts[None] == 300_099_776


def test_demo_preset_fits_the_size_budget():
    tok = DARTokenizer.from_preset("demo")
    size = sum(t.numel() * t.element_size() for t in tok.state_dict().values())
    assert size < 8e6
    assert TOKENIZER_PRESETS["demo"].image_size == 32


def test_gradient_checkpointing_gives_the_same_losses():
    tok = DARTokenizer.from_preset("tiny").eval()
    images = random_images(2, 16)
    plain = tok.training_losses(images, generator=torch.Generator().manual_seed(0)).total
    tok.enable_gradient_checkpointing()
    assert tok.decoder.gradient_checkpointing and tok.encoder.gradient_checkpointing
    checkpointed = tok.training_losses(images, generator=torch.Generator().manual_seed(0)).total
    checkpointed.backward()
    torch.testing.assert_close(checkpointed, plain)


def test_from_pretrained_names_a_missing_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer folder"):
        DARTokenizer.from_pretrained(tmp_path / "absent")


def test_noise_scale_scales_the_drawn_noise_only(tiny):
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(tiny.initial_noise(2, g(), scale=0.5), 0.5 * tiny.initial_noise(2, g()))
    assert not tiny.initial_noise(2, g(), scale=0.0).any()
    cooler = DARTokenizer(**tiny.config.replace(noise_scale=0.5).to_dict())
    cooler.load_state_dict(tiny.state_dict())
    cooler.eval()
    codes = tiny.encode(random_images(2, 16))
    expected = tiny.decode(codes, noise=0.5 * tiny.initial_noise(2, g()))
    torch.testing.assert_close(cooler.decode(codes, generator=g()), expected)
    explicit = tiny.initial_noise(2, g())
    torch.testing.assert_close(cooler.decode(codes, noise=explicit), tiny.decode(codes, noise=explicit))
    for bad in (-0.1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0"):
            tiny.initial_noise(1, scale=bad)
        with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0"):
            TokenizerConfig(noise_scale=bad)


def test_split_codebook_with_no_spread_keeps_codes_and_images(tiny):
    images = random_images(3, 16)
    split = split_codebook(tiny, 3, spread=0.0, generator=torch.Generator().manual_seed(0))
    size = tiny.config.codebook_size
    assert split.config == tiny.config.replace(codebook_size=3 * size) and not split.training
    codes = tiny.encode(images)
    assert torch.equal(split.encode(images), codes)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    torch.testing.assert_close(split.decode(codes, generator=g()), tiny.decode(codes, generator=g()))
    # the copies are the codes; the EMA statistics are shared among them and still average to the codebook
    book = split.quantizer.vq._codebook
    assert torch.equal(split.quantizer.codebook[size:], tiny.quantizer.codebook.repeat(2, 1))
    torch.testing.assert_close(book.cluster_size.sum(), tiny.quantizer.vq._codebook.cluster_size.sum())
    # (multiplied, not divided: vector-quantize-pytorch 1.34 starts the cluster sizes at 0)
    torch.testing.assert_close(book.embed_avg, book.embed * book.cluster_size[..., None])


def test_split_codebook_spreads_the_copies_and_round_trips(tiny, tmp_path):
    size = tiny.config.codebook_size
    split = split_codebook(tiny, 2, spread=0.05, generator=torch.Generator().manual_seed(0))
    book, old = split.quantizer.codebook, tiny.quantizer.codebook
    assert torch.equal(book[:size], old)
    torch.testing.assert_close(book.norm(dim=-1), torch.ones(2 * size))
    moved = (book[size:] - old).norm(dim=-1)
    assert (moved > 0.02).all() and (moved < 0.06).all()
    again = split_codebook(tiny, 2, spread=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.quantizer.codebook, book)  # the generator decides the directions
    split.save_pretrained(tmp_path)
    loaded = DARTokenizer.from_pretrained(tmp_path)
    images = random_images(2, 16)
    assert torch.equal(loaded.encode(images), split.encode(images))
    assert split_codebook(tiny.train(), 2).training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"factor": 1}, "factor must be an int >= 2"),
        ({"factor": 2.0}, "factor must be an int >= 2"),
        ({"factor": 2, "spread": -1.0}, "spread must be a number >= 0"),
    ],
)
def test_split_codebook_rejects_bad_arguments(tiny, kwargs, match):
    factor = kwargs.pop("factor")
    with pytest.raises(ValueError, match=match):
        split_codebook(tiny, factor, **kwargs)


def test_with_noise_scale_changes_only_the_default_noise(tiny, tmp_path):
    cooler = with_noise_scale(tiny, 0.25)
    assert cooler.config == tiny.config.replace(noise_scale=0.25) and tiny.config.noise_scale == 1
    assert not cooler.training
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    torch.testing.assert_close(cooler.initial_noise(2, g()), 0.25 * tiny.initial_noise(2, g()))
    cooler.save_pretrained(tmp_path)
    assert DARTokenizer.from_pretrained(tmp_path).config.noise_scale == 0.25
    with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0"):
        with_noise_scale(tiny, -1)
