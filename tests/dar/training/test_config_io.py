"""Tests of dar.config_io: YAML round trip, dotted overrides with type coercion, clear errors."""

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from dar.training.config_io import from_dict, load_config, parse_config_args, save_config, to_dict


@dataclass
class Inner:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    steps: int = 10
    clip: float | None = 1.0
    mode: Literal["constant", "cosine"] = "constant"

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("inner.steps must be >= 0")


@dataclass
class Outer:
    name: str = "run"
    enabled: bool = True
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, Any] = field(default_factory=dict)
    resume: str | None = None


@dataclass
class WithTrain:
    train: Outer = field(default_factory=Outer)


def test_round_trip(tmp_path):
    cfg = Outer(name="x", inner=Inner(lr=3e-4, betas=(0.8, 0.9), mode="cosine"), extra={"depth": 2})
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(path, Outer) == cfg
    assert to_dict(cfg)["inner"]["betas"] == [0.8, 0.9]


def test_overrides_are_coerced_to_field_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 1e-3\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = load_config(
        path,
        Outer,
        [
            "inner.steps=7",
            "enabled=false",
            "inner.betas=[0.5, 0.6]",
            "inner.clip=null",
            "name=123",
            "inner.mode=cosine",
            "extra.hidden_size=64",
            "inner.lr=2",
        ],
    )
    assert cfg.inner.steps == 7 and cfg.enabled is False and cfg.inner.betas == (0.5, 0.6)
    assert cfg.inner.clip is None and cfg.name == "123" and cfg.inner.mode == "cosine"
    assert cfg.extra == {"hidden_size": 64}
    assert isinstance(cfg.inner.lr, float) and cfg.inner.lr == 2.0
    assert load_config(path, Outer).inner.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.lrr=1", "valid keys under inner"),
        ("nope=1", "valid keys under <top level>"),
        ("inner.steps=abc", "inner.steps: expected an int"),
        ("inner.steps=1.5", "expected an int"),
        ("inner.mode=linear", "not one of"),
        ("enabled=maybe", "expected a bool"),
        ("inner.betas=[0.1]", "expected 2 values"),
        ("name=null", "null is not allowed"),
        ("inner", "section.key=value"),
        ("inner.steps=-1", "inner.steps must be >= 0"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, Outer, [override])


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  learning_rate: 1\n")
    with pytest.raises(ValueError, match=r"learning_rate.*valid keys: \['lr', 'betas'"):
        load_config(path, Outer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", Outer)


def test_from_dict_keeps_defaults():
    assert from_dict(Outer, {"inner": {"steps": 3}}) == Outer(inner=Inner(steps=3))


def test_cli_parses_config_set_and_resume(tmp_path):
    path = save_config(WithTrain(), tmp_path / "c.yaml")
    cfg = parse_config_args(
        WithTrain,
        ["--config", str(path), "--set", "train.inner.steps=5", "train.name=a", "--resume", "latest"],
    )
    assert cfg.train.inner.steps == 5 and cfg.train.name == "a" and cfg.train.resume == "latest"
