"""DARTConfig: validation, (de)serialisation, presets and their sizes, and the package's one-way doors."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from dart import DART_PRESETS, DARTConfig, parameter_count

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "dart"

# dart.md §2 (layers, width, heads, parameters; head dim 64)
PAPER_SIZES = {
    "DART-S": (12, 384, 6, 48e6),
    "DART-B": (12, 768, 12, 141e6),
    "DART-L": (24, 1024, 16, 464e6),
    "DART-XL": (28, 1152, 18, 812e6),
}


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_paper_presets_have_the_table_sizes(name):
    layers, width, heads, params = PAPER_SIZES[name]
    cfg = DART_PRESETS[name]
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim) == (layers, width, heads, 64)
    # the paper's latent setting: 256 px through the SD VAE (32×32×4), patch 2, K = 256 tokens, T = 16
    assert (cfg.space, cfg.sample_size, cfg.in_channels, cfg.tokens_per_level, cfg.num_levels) == (
        "latent",
        32,
        4,
        256,
        16,
    )
    count = parameter_count(cfg)
    assert abs(count - params) / params < 0.02, (
        f"{name}: {count / 1e6:.1f}M vs the table's ~{params / 1e6:.0f}M"
    )


def test_small_presets_build_and_fit_their_budget():
    tiny, demo = DART_PRESETS["tiny"], DART_PRESETS["demo"]
    assert tiny.space == demo.space == "pixel"
    assert parameter_count(tiny) < 100_000
    assert demo.image_size == 32 and demo.num_classes == 10
    assert parameter_count(demo) * 4 < 8e6  # fp32 safetensors beside the D-AR demo within the 25 MB budget


def test_to_dict_from_dict_round_trip_through_json():
    cfg = DART_PRESETS["tiny"].replace(id2label={0: "cat", 3: "dog"}, variant="dart_fm")
    data = json.loads(json.dumps(cfg.to_dict()))  # JSON turns int keys into strings
    again = DARTConfig.from_dict(data)
    assert again == cfg and again.id2label == {0: "cat", 3: "dog"}


def test_from_dict_and_replace_reject_unknown_fields():
    with pytest.raises(ValueError, match="unknown DARTConfig fields \\['levels'\\]"):
        DARTConfig.from_dict({"levels": 3})
    with pytest.raises(ValueError, match="unknown DARTConfig fields"):
        DART_PRESETS["tiny"].replace(num_level=3)
    assert DARTConfig.from_dict({"_class_name": "DARTModel", "num_levels": 4}).num_levels == 4


def test_replace_rederives_the_swiglu_width():
    cfg = DART_PRESETS["tiny"].replace(hidden_size=96, num_heads=3)
    assert cfg.intermediate_size == 256  # round_up(8·96/3, 64)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"variant": "dart_ar", "attention": "markovian"}, "token-causal"),
        ({"variant": "diffusion"}, "variant must be one of"),
        ({"num_levels": 1}, "T ≥ 2"),
        ({"patch_size": 3}, "patch_size=3"),
        ({"hidden_size": 33}, "not divisible by num_heads"),
        ({"hidden_size": 30}, "must be even"),
        ({"latent_factor": 2}, "pixel space"),
        ({"class_dropout": 1.0}, "class_dropout"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"id2label": {7: "cat"}}, "outside the classes"),
        ({"num_classes": 0}, "positive int"),
        ({"fm_prediction": "noise"}, "fm_prediction must be one of"),
        ({"fm_width": 0}, "fm_width must be a positive int or None"),
        ({"intermediate_size": True}, "intermediate_size must be a positive int or None"),
    ],
)
def test_invalid_configs_name_the_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        DART_PRESETS["tiny"].replace(**changes)


def test_latent_sizes_are_derived():
    cfg = DART_PRESETS["DART-B"].replace(image_size=512)
    assert (cfg.sample_size, cfg.grid_size, cfg.tokens_per_level, cfg.token_dim) == (64, 32, 1024, 16)
    assert cfg.sequence_length == 1 + 16 * 1024
    assert cfg.replace(variant="dart_ar").sequence_length == 16 * 1024
    assert cfg.replace(variant="dart_ar").mask_kind == "token_causal"


def test_package_imports_no_sibling_package():
    """One-way doors: no module of dart imports tokenizer, llama_ar or dar, not even inside a function."""
    forbidden = {"tokenizer", "llama_ar", "dar", "recipes", "tests"}
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"


def test_import_dart_stays_light():
    code = "import sys, dart; from dart import DARTConfig; print('torch' in sys.modules, sorted(dart.__all__)[:2])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert result.stdout.split()[0] == "False"
