"""GGUF export and llama.cpp sampling: llama.cpp runs the exported prior with transformers' logits and codes.

These tests need the ``serve`` extra (``gguf`` and ``llama-cpp-python``); without it they skip, except the
ones that check the error messages naming the extra.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from llama_ar import VocabLayout, build_ar_model, iter_code_groups, load_ar_model, sample_codes

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "checkpoints" / "dar-animals"
HAS_GGUF = importlib.util.find_spec("gguf") is not None
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_gguf = pytest.mark.skipif(not HAS_GGUF, reason="gguf is not installed: pip install -e .[serve]")
needs_serve = pytest.mark.skipif(
    not (HAS_GGUF and HAS_LLAMA_CPP),
    reason="gguf / llama-cpp-python are not installed: pip install -e .[serve]",
)

# Bounds on max|llama.cpp − transformers| / max|transformers| over the fixed demo prefix. f32: the 1e-3
# (measured 1.4e-6). f16 / q8_0: weight-rounding bounds, several times what they give there (measured 1.6e-3 and
# 1.8e-2) and far below what a q/k layout error gives (order 1).
LOGIT_BOUNDS = {"f32": 1e-3, "f16": 1e-2, "q8_0": 5e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def demo_prefix(layout: VocabLayout) -> torch.Tensor:
    """Two fixed rows: class 3 and the null class, each followed by 24 fixed codes."""
    codes = torch.randint(0, layout.codebook_size, (2, 24), generator=torch.Generator().manual_seed(0))
    return layout.build_inputs(torch.tensor([layout.class_token(3), layout.null_token]), codes)


@pytest.fixture(scope="module")
def demo_model():
    return load_ar_model(DEMO / "ar_model").eval()


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory):
    """The shipped demo AR model exported at every dtype (module-scoped: exported once)."""
    if not HAS_GGUF:
        pytest.skip("gguf is not installed: pip install -e .[serve]")
    from llama_ar.gguf import export_gguf

    folder = tmp_path_factory.mktemp("gguf")
    return {dtype: export_gguf(DEMO, folder / f"demo-{dtype}.gguf", dtype=dtype) for dtype in LOGIT_BOUNDS}


@pytest.fixture(scope="module")
def demo_prior(demo_gguf):
    if not HAS_LLAMA_CPP:
        pytest.skip("llama-cpp-python is not installed: pip install -e .[serve]")
    from llama_ar.llamacpp import LlamaCppPrior

    with LlamaCppPrior(demo_gguf["f32"], n_threads=1) as prior:
        yield prior


def tiny_folder(tmp_path, **llama_kwargs):
    """A tiny random prior (live head) saved with save_pretrained; returns (folder, model)."""
    torch.manual_seed(0)
    layout = VocabLayout(64, 3)
    model = build_ar_model(
        "tiny", layout, num_tokens=16, zero_init_head=False, initializer_range=0.1, llama_kwargs=llama_kwargs
    ).eval()
    model.save_pretrained(tmp_path)
    return tmp_path, model


# ------------------------------------------------------------------------------------------ export
@needs_gguf
@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
def test_export_declares_the_vocabulary_without_a_text_tokenizer(demo_gguf, demo_model, dtype):
    import gguf

    reader = gguf.GGUFReader(demo_gguf[dtype])
    fields = {name: field.contents() for name, field in reader.fields.items()}
    layout = VocabLayout.from_config(demo_model.config)
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "none" and "tokenizer.ggml.tokens" not in fields
    assert fields["llama.vocab_size"] == layout.vocab_size
    assert VocabLayout.from_dict(json.loads(fields["dar.layout"])) == layout
    assert fields["dar.num_tokens"] == demo_model.config.max_position_embeddings - 1
    types = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert (
        len(types) == 2 + 1 + 9 * demo_model.config.num_hidden_layers
    )  # embedding, head, final norm, layers
    matrix = gguf.GGMLQuantizationType.F32 if dtype == "f32" else gguf.GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == types["output.weight"] == types["blk.0.attn_q.weight"] == matrix
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == gguf.GGMLQuantizationType.F32


@needs_gguf
def test_export_lists_missing_and_unexpected_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    from llama_ar.gguf import export_gguf

    folder, _ = tiny_folder(tmp_path / "model")
    weights = load_file(folder / "model.safetensors")
    weights["model.extra.weight"] = weights.pop("model.layers.1.mlp.up_proj.weight")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \(1\): \['model.layers.1.mlp.up_proj.weight'\]") as error:
        export_gguf(folder, tmp_path / "out.gguf")
    assert "unexpected (1): ['model.extra.weight']" in str(error.value)
    assert "\n" not in str(error.value)  # one line: the CLI prints it as its error
    assert not list(tmp_path.glob("out.gguf*"))  # nothing half-written


@needs_gguf
def test_export_refuses_misshaped_and_damaged_weights(tmp_path):
    from llama_ar.gguf import export_gguf

    folder, _ = tiny_folder(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] *= 2  # the weights no longer fit the config llama.cpp would be told
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"misshaped .*mlp.down_proj.weight"):
        export_gguf(folder, tmp_path / "out.gguf")
    config["intermediate_size"] //= 2
    (folder / "config.json").write_text(json.dumps(config))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors is damaged"):
        export_gguf(folder, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))


@needs_gguf
def test_export_refuses_foreign_folders_and_dtypes(tmp_path):
    from llama_ar.gguf import export_gguf

    with pytest.raises(FileNotFoundError, match="ar_model/config.json"):
        export_gguf(tmp_path, tmp_path / "out.gguf")
    folder, _ = tiny_folder(tmp_path / "model")
    with pytest.raises(ValueError, match="f32"):
        export_gguf(folder, tmp_path / "out.gguf", dtype="q4_0")
    config = json.loads((folder / "config.json").read_text())
    del config["dar_layout"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="dar_layout"):
        export_gguf(folder, tmp_path / "out.gguf")


def test_missing_extra_is_named(monkeypatch, tmp_path):
    from llama_ar import gguf as gguf_module
    from llama_ar import llamacpp

    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf → ImportError
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[serve\]"):
        gguf_module.export_gguf(DEMO, tmp_path / "out.gguf")
    with pytest.raises(ImportError, match=r"pip install -e \.\[serve\]"):
        llamacpp.LlamaCppPrior(tmp_path / "out.gguf")


# ------------------------------------------------------------------------------------- llama.cpp logits
@needs_serve
def test_f32_logits_match_transformers_on_the_demo_model(demo_prior, demo_model):
    ids = demo_prefix(demo_prior.layout)
    with torch.no_grad():
        expected = demo_model(ids).logits
    actual = demo_prior.logits(ids)
    assert actual.shape == expected.shape == (2, 25, demo_prior.layout.vocab_size)
    assert relative_error(actual, expected) <= LOGIT_BOUNDS["f32"]


@needs_serve
@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_quantised_logits_stay_close(demo_gguf, demo_model, dtype):
    from llama_ar.llamacpp import LlamaCppPrior

    with LlamaCppPrior(demo_gguf[dtype], n_threads=1) as prior:
        assert prior.dtype == dtype and prior.kv_dtype == "f16"
        ids = demo_prefix(prior.layout)
        with torch.no_grad():
            expected = demo_model(ids).logits
        error = relative_error(prior.logits(ids), expected)
    assert 0 < error <= LOGIT_BOUNDS[dtype]


@needs_serve
@pytest.mark.parametrize("kv_heads", [2, 1], ids=["mha", "gqa"])
def test_rope_layout_of_q_and_k_matches_transformers(tmp_path, kv_heads):
    # a random model exercises every head and both the q and the (grouped) k permutation
    from llama_ar.gguf import export_gguf
    from llama_ar.llamacpp import LlamaCppPrior

    folder, model = tiny_folder(tmp_path / "model", num_key_value_heads=kv_heads)
    ids = torch.tensor([[64, *range(0, 60, 4)], [66, *range(63, 3, -4)]])  # class 0 / null + 15 codes
    with torch.no_grad():
        expected = model(ids).logits
    with LlamaCppPrior(export_gguf(folder, tmp_path / "tiny.gguf"), n_threads=1) as prior:
        assert relative_error(prior.logits(ids), expected) <= LOGIT_BOUNDS["f32"]


# ------------------------------------------------------------------------------------- llama.cpp codes
@needs_serve
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cfg_scale=4.0),
        dict(cfg_scale=8.0, cfg_schedule="linear", cfg_scale_start=1.1),
        dict(cfg_scale=3.0, cfg_interval=20, prefix_codes=torch.arange(10)),
        dict(cfg_scale=1.0),
    ],
    ids=["constant", "linear", "interval+prefix", "unguided"],
)
def test_greedy_llamacpp_codes_equal_sample_codes(demo_prior, demo_model, kwargs):
    labels = list(range(demo_prior.layout.num_classes))
    expected = sample_codes(demo_model, labels, demo_prior.num_tokens, top_k=1, **kwargs)
    assert torch.equal(demo_prior.sample_codes(labels, top_k=1, **kwargs), expected)


@needs_serve
def test_unified_kv_cache_gives_the_same_codes(demo_gguf, demo_model):
    from llama_ar.llamacpp import LlamaCppPrior

    kwargs = dict(cfg_scale=8.0, cfg_schedule="linear", cfg_scale_start=1.1, top_k=1)
    with LlamaCppPrior(demo_gguf["f32"], n_threads=1, kv_unified=True) as prior:
        codes = prior.sample_codes([0, 4, 9], **kwargs)
    assert torch.equal(codes, sample_codes(demo_model, [0, 4, 9], 64, **kwargs))


@needs_serve
def test_llamacpp_mixes_guidance_like_separate_transformers_forwards(demo_prior, demo_model):
    seen = []
    labels = [2, 7]
    codes = demo_prior.sample_codes(
        labels,
        16,
        cfg_scale=6.0,
        cfg_schedule="linear",
        cfg_scale_start=1.5,
        generator=torch.Generator().manual_seed(0),
        logits_callback=lambda k, logits: seen.append((k, logits.clone())),
    )
    layout, scales = demo_prior.layout, torch.linspace(1.5, 6.0, 16)
    assert [k for k, _ in seen] == list(range(16))
    for k, mixed in seen:
        with torch.no_grad():
            cond = demo_model(layout.build_inputs(layout.class_tokens(labels), codes[:, :k])).logits[:, -1]
            uncond = demo_model(layout.build_inputs(layout.null_tokens(2), codes[:, :k])).logits[:, -1]
        cond, uncond = cond[:, : layout.codebook_size], uncond[:, : layout.codebook_size]
        expected = uncond + scales[k] * (cond - uncond)
        assert relative_error(mixed, expected) <= LOGIT_BOUNDS["f32"], f"code {k}"


@needs_serve
def test_sampled_codes_are_codes_even_when_the_head_favours_class_ids(tmp_path):
    from llama_ar.gguf import export_gguf
    from llama_ar.llamacpp import LlamaCppPrior

    folder, model = tiny_folder(tmp_path / "model")
    with torch.no_grad():
        model.lm_head.weight[64:] *= 50.0  # class / null logits dwarf the code logits
    model.save_pretrained(folder)
    with LlamaCppPrior(export_gguf(folder, tmp_path / "trap.gguf"), n_threads=1) as prior:
        logits = prior.logits(torch.tensor([[64, 1, 2]]))[0, -1]
        assert int(logits.argmax()) >= 64  # the trap is armed
        for cfg in (1.0, 3.0):
            codes = prior.sample_codes([0, 1, 2], temperature=2.0, cfg_scale=cfg, generator=torch.Generator())
            assert codes.dtype == torch.int64 and codes.shape == (3, 16)
            assert int(codes.min()) >= 0 and int(codes.max()) < 64


@needs_serve
def test_groups_stream_in_order_and_match_the_transformers_sampler(demo_prior, demo_model):
    kwargs = dict(cfg_scale=4.0, temperature=1.0, prefix_codes=torch.arange(12))
    groups = list(
        demo_prior.iter_code_groups([0, 5], 64, 8, generator=torch.Generator().manual_seed(1), **kwargs)
    )
    assert [group.shape for group in groups] == [(2, 8)] * 8
    assert torch.equal(torch.cat(groups, 1)[:, :12], torch.arange(12).expand(2, -1))
    reference = iter_code_groups(
        demo_model, [0, 5], 64, 8, generator=torch.Generator().manual_seed(1), **kwargs
    )
    # same logits (to ~1e-6), same warpers, same generator: the same draws
    assert torch.equal(torch.cat(groups, 1), torch.cat(list(reference), 1))


@needs_serve
def test_llamacpp_codes_decode_to_images(demo_prior):
    from tokenizer import DARTokenizer

    tokenizer = DARTokenizer.from_pretrained(DEMO / "tokenizer").eval()
    assert tokenizer.config.num_tokens == demo_prior.num_tokens
    assert tokenizer.config.codebook_size == demo_prior.layout.codebook_size
    codes = demo_prior.sample_codes([1, 6], cfg_scale=4.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = tokenizer.decode(codes, generator=torch.Generator().manual_seed(0))
    size = tokenizer.config.image_size
    assert images.shape == (2, 3, size, size) and bool(torch.isfinite(images).all())
    assert float(images.std()) > 0.05  # not a blank canvas


@needs_serve
def test_sampler_validates_arguments_at_call_time(demo_prior):
    for kwargs, match in [
        (dict(class_labels=[10]), r"outside \[0, 10\)"),
        (dict(class_labels=[0], num_tokens=72, tokens_per_step=8), "capacity"),
        (dict(class_labels=[0], num_tokens=64, tokens_per_step=7), "multiple of tokens_per_step"),
        (dict(class_labels=[0], cfg_interval=-2), "cfg_interval"),
        (dict(class_labels=[0], temperature=0.0), "top_k=1"),
        (dict(class_labels=[0], cfg_schedule="cosine"), "cfg_schedule must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            demo_prior.iter_code_groups(**kwargs)  # no next(): validation must not be lazy


@needs_serve
def test_a_gguf_without_the_dar_layout_is_refused(tmp_path):
    import gguf

    from llama_ar.llamacpp import LlamaCppPrior

    with pytest.raises(FileNotFoundError, match="export-gguf"):
        LlamaCppPrior(tmp_path / "missing.gguf")
    # a valid llama GGUF with no dar.layout: copy the tiny export's tensors and metadata except dar.*
    from llama_ar.gguf import export_gguf

    folder, _ = tiny_folder(tmp_path / "model")
    source = gguf.GGUFReader(export_gguf(folder, tmp_path / "tiny.gguf"))
    writer = gguf.GGUFWriter(tmp_path / "foreign.gguf", arch="llama")
    for name, field in source.fields.items():
        if name.startswith("llama.") or name in ("tokenizer.ggml.model", "general.file_type"):
            value = field.contents()
            kind = field.types[0]
            writer.add_key_value(name, value, kind)
    for tensor in source.tensors:
        writer.add_tensor(tensor.name, tensor.data.reshape(tuple(reversed(tensor.shape.tolist()))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="dar.layout"):
        LlamaCppPrior(tmp_path / "foreign.gguf")
