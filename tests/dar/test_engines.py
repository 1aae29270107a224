"""LLM engines behind DARPipeline: the llama.cpp engine samples the same codes, so the same images, as transformers.

The llama.cpp tests need the ``serve`` extra (they skip without it); the argument checks run everywhere.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny import make_tiny_pipeline

from dar import DARPipeline, cli
from dar.engines import build_engine, engine_of
from dar.loading import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "checkpoints" / "dar-animals"
HAS_SERVE = all(importlib.util.find_spec(name) is not None for name in ("gguf", "llama_cpp"))
needs_serve = pytest.mark.skipif(
    not HAS_SERVE, reason="gguf / llama-cpp-python missing: pip install -e .[serve]"
)


def test_engine_arguments_are_checked():
    pipe = make_tiny_pipeline()
    assert build_engine(None, pipe.ar_model, pipe.tokenizer.config.codebook_size) is None
    assert build_engine("transformers", pipe.ar_model, pipe.tokenizer.config.codebook_size) is None
    with pytest.raises(ValueError, match="engine must be one of"):
        DARPipeline(pipe.tokenizer, pipe.ar_model, engine="vllm")
    with pytest.raises(TypeError, match="LlamaCppPrior"):
        DARPipeline(pipe.tokenizer, pipe.ar_model, engine=object())
    with pytest.raises(ValueError, match="add --engine llamacpp"):
        engine_of(None, "model.gguf", "cpu")
    with pytest.raises(ValueError, match="--device cpu"):
        engine_of("llamacpp", None, "cuda")
    assert engine_of(None, None, "cuda") is None


def test_dart_folders_refuse_an_llm_engine(tmp_path):
    from dart import DARTModel, DARTPipeline

    DARTPipeline(DARTModel.from_preset("tiny")).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="only D-AR pipelines sample with an LLM engine"):
        load_pipeline(tmp_path, engine="llamacpp")
    with pytest.raises(ValueError, match="holds a DARTPipeline, not a DARPipeline"):
        DARPipeline.from_pretrained(tmp_path)


@needs_serve
def test_llamacpp_engine_gives_the_transformers_images():
    """Greedy codes are engine-independent and the decoder noise comes from the same generator first."""
    reference = DARPipeline.from_pretrained(DEMO)
    served = DARPipeline.from_pretrained(DEMO, engine="llamacpp")
    kwargs = dict(class_labels=[0, 3], top_k=1, cfg_scale=2.0, output_type="pt")
    expected = reference(**kwargs, generator=torch.Generator().manual_seed(5)).images
    actual = served(**kwargs, generator=torch.Generator().manual_seed(5)).images
    torch.testing.assert_close(actual, expected)
    steps = list(
        served.stream(
            [0, 3], top_k=1, cfg_scale=2.0, output_type="pt", generator=torch.Generator().manual_seed(5)
        )
    )
    torch.testing.assert_close(steps[-1].preview, expected)


@needs_serve
def test_cli_exports_a_gguf_and_samples_with_it(tmp_path, capsys):
    gguf = tmp_path / "demo-q8_0.gguf"
    assert cli.main(["export-gguf", "--out", str(gguf), "--dtype", "q8_0"]) in (None, 0)
    assert gguf.stat().st_size > 0
    out = tmp_path / "samples"
    args = ["sample", "--engine", "llamacpp", "--gguf", str(gguf), "--classes", "cat", "--per-class", "2"]
    assert cli.main(args + ["--out", str(out), "--quiet"]) in (None, 0)
    assert (out / "samples.png").is_file()
    assert cli.main(["export-gguf", "--out", str(gguf)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
