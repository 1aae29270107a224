"""Every shipped recipe config parses into its dataclass; paper-scale configs carry the paper's hyperparameters."""

from pathlib import Path

import pytest
import yaml

from dar.training.config import (
    ARTrainingConfig,
    DARTTrainingConfig,
    ExtractCodesConfig,
    TokenizerTrainingConfig,
)
from dar.training.config_io import load_config
from dar.training.optim import LRSchedule

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _class_for(path):
    if "codes" in path.stem:
        return ExtractCodesConfig
    if "dart" in path.stem:
        return DARTTrainingConfig
    return TokenizerTrainingConfig if "tokenizer" in path.stem else ARTrainingConfig


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_parses_and_names_known_presets(path):
    from llama_ar import AR_PRESETS
    from tokenizer import TOKENIZER_PRESETS

    cfg = load_config(path, _class_for(path))
    if getattr(
        getattr(cfg, "model", None), "init_from", None
    ):  # a later stage: the export sets the architecture
        assert cfg.model.init_from.startswith("runs/") and cfg.model.init_from.endswith(
            ("tokenizer", "transformer")
        )
        assert not cfg.model.overrides, "overrides do not apply to an init_from export"
        return
    if isinstance(cfg, TokenizerTrainingConfig):
        assert cfg.model.preset in TOKENIZER_PRESETS
        assert cfg.data.image_size == TOKENIZER_PRESETS[cfg.model.preset].image_size
    elif isinstance(cfg, ARTrainingConfig):
        assert cfg.model.preset in AR_PRESETS
        LRSchedule(cfg.optim, cfg.train.max_steps)  # the schedule window is valid
    elif isinstance(cfg, DARTTrainingConfig):
        from dart import DART_PRESETS

        assert cfg.model.preset in DART_PRESETS
        assert cfg.data.image_size == DART_PRESETS[cfg.model.preset].image_size


def test_expected_configs_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {
        "tiny_tokenizer.yaml",
        "tiny_ar.yaml",
        "demo_tokenizer.yaml",
        "demo_codes.yaml",
        "demo_ar.yaml",
        "demo_tokenizer_stage2.yaml",
        "demo_tokenizer_stage3.yaml",
        "demo_tokenizer_stage4.yaml",
        "demo_tokenizer_stage5.yaml",
        "demo_tokenizer_stage6.yaml",
        "demo_dart.yaml",
        "demo_dart_stage2.yaml",
        "demo_dart_markov.yaml",
        "demo_dart_fm.yaml",
        "demo_dart_fm_x0.yaml",
        "demo_dart_ar.yaml",
        "tokenizer_v1.yaml",
        "ar_l.yaml",
        "ar_xl.yaml",
    } <= names


@pytest.mark.parametrize(
    "name, model, steps",
    [
        ("demo_dart_markov.yaml", {"preset": "demo", "overrides": {"attention": "own_level"}}, 4000),
        (
            "demo_dart_fm.yaml",
            {"preset": "demo", "overrides": {"variant": "dart_fm", "fm_prediction": "velocity"}},
            1750,
        ),
        (
            "demo_dart_fm_x0.yaml",
            {"preset": "demo", "overrides": {"variant": "dart_fm", "fm_prediction": "x0"}},
            1750,
        ),
        ("demo_dart_ar.yaml", {"preset": "demo", "overrides": {"variant": "dart_ar"}}, 4000),
    ],
)
def test_side_by_side_configs_change_only_the_model_and_steps_of_the_dart_demo(name, model, steps):
    # the README compares them with demo_dart.yaml's export: same data, optimiser, EMA, seed and guidance
    base, other = (yaml.safe_load((CONFIGS / n).read_text()) for n in ("demo_dart.yaml", name))
    assert other.pop("model") == model and base.pop("model") == {"preset": "demo"}
    assert other["train"].pop("max_steps") == steps and base["train"].pop("max_steps") == 4000
    for cfg in (base, other):  # where it writes, and how often it draws a grid
        del cfg["train"]["output_dir"], cfg["train"]["sample_every"]
    assert other == base


def test_tokenizer_v1_has_paper_hyperparameters():
    cfg = load_config(CONFIGS / "tokenizer_v1.yaml", TokenizerTrainingConfig)
    assert (cfg.optim.lr, tuple(cfg.optim.betas), cfg.optim.warmup_steps) == (2e-4, (0.9, 0.95), 500)
    assert (cfg.optim.schedule, cfg.optim.weight_decay, cfg.optim.grad_clip) == ("constant", 0.0, 1.0)
    assert (cfg.ema.enabled, cfg.ema.decay) == (True, 0.999)
    assert (cfg.data.batch_size, cfg.train.max_steps, cfg.data.image_size) == (1024, 210_000, 256)
    assert (cfg.loss.perceptual, cfg.loss.perceptual_weight) == ("lpips", 0.5)
    assert (cfg.loss.repa_model, cfg.loss.repa_weight) == ("facebook/dinov2-base", 0.5)


@pytest.mark.parametrize("name, preset", [("ar_l.yaml", "dar-l"), ("ar_xl.yaml", "dar-xl")])
def test_ar_configs_have_paper_hyperparameters(name, preset):
    cfg = load_config(CONFIGS / name, ARTrainingConfig)
    assert cfg.model.preset == preset
    assert (cfg.optim.lr, tuple(cfg.optim.betas), cfg.optim.weight_decay) == (4e-4, (0.9, 0.95), 0.05)
    assert (cfg.data.batch_size, cfg.optim.grad_clip, cfg.ema.enabled) == (1024, 1.0, False)
    steps_per_epoch = 1_281_167 // 1024
    assert cfg.train.max_steps == 300 * steps_per_epoch
    schedule = LRSchedule(cfg.optim, cfg.train.max_steps)
    lr = lambda step: cfg.optim.lr * schedule(step)  # noqa: E731
    assert lr(250 * steps_per_epoch - 1) == pytest.approx(4e-4)  # constant for 250 epochs
    assert lr(cfg.train.max_steps) == pytest.approx(1e-5)  # linear to 1e-5 over the last 50


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid_yaml(path):
    data = yaml.safe_load(path.read_text())
    assert (
        data["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"} and data["mixed_precision"] == "bf16"
    )


@pytest.mark.parametrize("scale", [0.5, float("inf")])
def test_dart_sample_guidance_is_checked_when_the_config_is_read(scale):
    with pytest.raises(ValueError, match="sample.cfg_scale"):
        load_config(CONFIGS / "tiny_dart.yaml", DARTTrainingConfig, [f"sample.cfg_scale={scale}"])


@pytest.mark.parametrize(
    "path,override",
    [
        ("demo_tokenizer_stage2.yaml", "model.overrides.num_steps=4"),
        ("demo_dart_stage2.yaml", "model.overrides.attention=own_level"),
    ],
)
def test_overrides_on_an_init_from_export_are_refused_not_ignored(path, override):
    with pytest.raises(ValueError, match="do not apply to model.init_from"):
        load_config(CONFIGS / path, _class_for(CONFIGS / path), [override])
