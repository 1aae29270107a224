"""Tests of dar.convert: the official tokenizer configuration, and whole official checkpoints converted into one
pipeline folder that reproduces the official outputs; the ``dar convert`` arguments."""

from __future__ import annotations

import argparse

import pytest
import torch
from official_checkpoints import (
    CLASSES,
    CODEBOOK,
    FFN,
    HEADS,
    HIDDEN,
    LAYERS,
    OFFICIAL_TOKENIZER_V1_YAML,
    SMALL_OFFICIAL_TOKENIZER,
    converted_tokenizer,
    official_gpt_state_dict,
    official_tokenizer_state_dict,
    reference_gpt_logits,
)

from dar import convert
from dar.convert import tokenizer_config
from llama_ar import ARConfig, VocabLayout


@pytest.fixture
def layout():
    return VocabLayout(CODEBOOK, CLASSES)


@pytest.fixture
def ar_config():
    return ARConfig(
        hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN, num_tokens=16
    )


def test_official_yaml_gives_the_tokenizer_v1_preset(tmp_path):
    from tokenizer import TOKENIZER_PRESETS

    path = tmp_path / "tokenizer_v1.yaml"
    path.write_text(OFFICIAL_TOKENIZER_V1_YAML)
    assert tokenizer_config.tokenizer_config_from_official_yaml(path) == TOKENIZER_PRESETS["tokenizer_v1"]
    assert tokenizer_config.resolve_tokenizer_config(str(path)) == TOKENIZER_PRESETS["tokenizer_v1"]
    assert tokenizer_config.resolve_tokenizer_config("tokenizer_v1") is TOKENIZER_PRESETS["tokenizer_v1"]
    small = tokenizer_config.tokenizer_config_from_official(SMALL_OFFICIAL_TOKENIZER)
    assert (small.image_size, small.num_tokens, small.tokens_per_step, small.repa_layer) == (16, 16, 4, None)
    path.write_text(OFFICIAL_TOKENIZER_V1_YAML.replace("mlp_head: false", "mlp_head: true\n    lpips: 1"))
    with pytest.raises(ValueError, match="diff_decoder.lpips"):
        tokenizer_config.tokenizer_config_from_official_yaml(path)
    path.write_text(OFFICIAL_TOKENIZER_V1_YAML.replace("mlp_head: false", "mlp_head: true"))
    with pytest.raises(ValueError, match="mlp_head=true"):
        tokenizer_config.tokenizer_config_from_official_yaml(path)
    with pytest.raises(ValueError, match="neither a preset"):
        tokenizer_config.resolve_tokenizer_config("tokenizer_v9")


def test_tokenizer_conversion_errors(tmp_path):
    config = tokenizer_config.tokenizer_config_from_official(SMALL_OFFICIAL_TOKENIZER)
    with pytest.raises(ValueError, match="looks like a GPT checkpoint"):
        converted_tokenizer(official_gpt_state_dict(), config)
    broken = official_tokenizer_state_dict(SMALL_OFFICIAL_TOKENIZER)
    del broken["decoder_layers.0.mlp.fc2.bias"]
    with pytest.raises(ValueError, match="conditioning.layers.0.mlp.fc2.bias"):
        converted_tokenizer(broken, config)
    # A failing conversion writes nothing: no output folder, no temporary folder.
    torch.save(official_gpt_state_dict(), tmp_path / "gpt.pt")
    with pytest.raises(ValueError, match="looks like a GPT checkpoint"):
        convert.convert_official(
            tmp_path / "gpt.pt", tmp_path / "gpt.pt", tmp_path / "out", num_classes=CLASSES
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt.pt"]


def _tensor_index(state_dict):
    index = {}
    for value in state_dict.values():
        index.setdefault(value.numel(), []).append(value.detach().flatten().float())
    return index


def test_convert_official_end_to_end(tmp_path, layout):
    """Official-format files -> `dar convert` -> a folder whose models hold every official tensor."""
    from transformers import AutoModelForCausalLM

    from dar.pipeline import DARPipeline
    from tokenizer import DARTokenizer

    tok_sd, gpt_sd = official_tokenizer_state_dict(SMALL_OFFICIAL_TOKENIZER), official_gpt_state_dict()
    torch.save(tok_sd, tmp_path / "tokenizer.pt")
    torch.save({f"_orig_mod.{k}": v for k, v in gpt_sd.items()}, tmp_path / "gpt.pt")
    yaml_path = tmp_path / "small.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump({"model": SMALL_OFFICIAL_TOKENIZER}))
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    parser = convert.add_convert_arguments(argparse.ArgumentParser())
    argv = [
        "--tokenizer",
        str(tmp_path / "tokenizer.pt"),
        "--ar",
        str(tmp_path / "gpt.pt"),
        "--out",
        str(out),
    ]
    argv += ["--tokenizer-config", str(yaml_path), "--class-names", str(names), "--num-classes", str(CLASSES)]
    assert convert.run_convert(parser.parse_args([*argv, "--overwrite"])) == out
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dirs left

    ar = AutoModelForCausalLM.from_pretrained(out / "ar_model").eval()
    loaded_layout = VocabLayout.from_config(ar.config)
    assert loaded_layout == layout and loaded_layout.id2label[3] == "class 3"
    codes = torch.randint(0, CODEBOOK, (1, 15))
    with torch.no_grad():
        logits = ar(torch.cat([torch.tensor([[layout.class_token(3)]]), codes], 1)).logits[..., :CODEBOOK]
    torch.testing.assert_close(
        logits, reference_gpt_logits(gpt_sd, torch.tensor([3]), codes), atol=1e-4, rtol=1e-4
    )

    pipe = DARPipeline.from_pretrained(out)
    assert pipe.vocab_layout == layout and pipe.id2label[CLASSES - 1] == f"class {CLASSES - 1}"
    tokenizer = pipe.tokenizer
    assert isinstance(tokenizer, DARTokenizer) and tokenizer.config.num_tokens == 16
    index = _tensor_index(tokenizer.state_dict())
    skipped = (
        "quantize.codebook_used",
        "diff_decoder.net.repa_out.",
    )  # statistics / unused head (repa_layer 99)
    lost = [
        name
        for name, value in tok_sd.items()
        if not name.startswith(skipped)
        and not any(
            torch.allclose(value.flatten(), other, atol=1e-6) for other in index.get(value.numel(), [])
        )
    ]
    assert lost == []
    # The tokenizer package's inverse mapping names exactly the official keys of reference §6.2.
    from tokenizer.official_keys import ours_to_official

    back = ours_to_official(tokenizer.state_dict(), tokenizer.config)
    assert sorted(back) == sorted(k for k in tok_sd if not k.startswith("diff_decoder.net.repa_out."))
    assert all(back[k].shape == tok_sd[k].shape for k in back)


# ------------------------------------------------------------------------------------- assembly and CLI
def test_cli_arguments_and_class_names(tmp_path):
    parser = convert.add_convert_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--tokenizer", "t.pt", "--ar", "a.pt", "--out", "o", "--num-classes", "3", "--overwrite"]
    )
    assert (args.tokenizer, args.ar, args.out, args.num_classes, args.overwrite) == (
        "t.pt",
        "a.pt",
        "o",
        3,
        True,
    )
    assert args.tokenizer_config == "tokenizer_v1" and args.ar_preset is None and args.class_names is None
    names = tmp_path / "names.txt"
    names.write_text("tench, Tinca tinca\ngoldfish\n\n")
    assert convert.read_class_names(names) == ["tench, Tinca tinca", "goldfish"]
    names.write_text("a\n\nb\n")
    with pytest.raises(ValueError, match="blank lines"):
        convert.read_class_names(names)


def test_convert_official_refuses_non_empty_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert.convert_official(tmp_path / "t.pt", tmp_path / "a.pt", out)
    assert (out / "keep.txt").read_text() == "precious"


def test_convert_never_destroys_its_inputs_or_a_file(tmp_path):
    torch.save(official_gpt_state_dict(), tmp_path / "gpt.pt")
    with pytest.raises(ValueError, match="lies inside the output folder"):
        convert.convert_official(tmp_path / "gpt.pt", tmp_path / "gpt.pt", tmp_path, overwrite=True)
    assert (tmp_path / "gpt.pt").is_file()
    (tmp_path / "pipeline").write_text("a file")
    with pytest.raises(FileExistsError, match="is a file"):
        convert.convert_official(
            tmp_path / "gpt.pt", tmp_path / "gpt.pt", tmp_path / "pipeline", overwrite=True
        )
    assert (tmp_path / "pipeline").read_text() == "a file"


def test_convert_never_deletes_its_class_names_or_yaml_inside_the_output(tmp_path):
    import yaml

    torch.save(official_tokenizer_state_dict(SMALL_OFFICIAL_TOKENIZER), tmp_path / "tokenizer.pt")
    torch.save(official_gpt_state_dict(), tmp_path / "gpt.pt")
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "small.yaml").write_text(yaml.safe_dump({"model": SMALL_OFFICIAL_TOKENIZER}))
    (out / "names.txt").write_text("".join(f"c{i}\n" for i in range(CLASSES)))
    parser = convert.add_convert_arguments(argparse.ArgumentParser())
    argv = [
        "--tokenizer",
        str(tmp_path / "tokenizer.pt"),
        "--ar",
        str(tmp_path / "gpt.pt"),
        "--out",
        str(out),
    ]
    argv += ["--num-classes", str(CLASSES), "--overwrite"]
    with pytest.raises(ValueError, match="small.yaml lies inside the output folder"):
        convert.run_convert(parser.parse_args([*argv, "--tokenizer-config", str(out / "small.yaml")]))
    with pytest.raises(ValueError, match="names.txt lies inside the output folder"):
        convert.run_convert(
            parser.parse_args(
                [
                    *argv,
                    "--tokenizer-config",
                    str(out / "small.yaml"),
                    "--class-names",
                    str(out / "names.txt"),
                ]
            )
        )
    assert sorted(p.name for p in out.iterdir()) == ["names.txt", "small.yaml"]


def test_a_broken_tokenizer_yaml_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [1, 2")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML"):
        tokenizer_config.resolve_tokenizer_config(str(tmp_path / "bad.yaml"))
