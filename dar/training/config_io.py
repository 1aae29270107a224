"""YAML <-> nested dataclass configs with dotted command-line overrides (DESIGN §6, CONVENTIONS §3, §10).

The dataclasses hold every default; a YAML file only lists values that differ. ``load_config`` reads a YAML
file, applies ``a.b=c`` overrides, and builds the dataclass tree, coercing each value to its field's type
(``int``, ``float``, ``bool``, ``str``, ``Literal``, ``Optional``, tuples, lists, dicts, nested dataclasses).
Unknown keys raise a ``ValueError`` that lists the valid ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

__all__ = ["apply_overrides", "from_dict", "load_config", "parse_config_args", "save_config", "to_dict"]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass tree as plain dicts/lists (tuples become lists, so the result dumps to YAML/JSON)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return plain(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a command line) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"{where}: null is not allowed (type {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} does not fit {_type_name(tp)} ({'; '.join(errors)})")
    if value is None:
        raise ValueError(f"{where}: null is not allowed (type {_type_name(tp)}); give a value")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, _prefix=where)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{where}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ValueError(f"{where}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a float, got {value!r}")
        try:
            return float(value)  # also "1e-4", which YAML 1.1 reads as a string
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a float, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _fields(cls: type) -> tuple[dict[str, Any], list[str]]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    return hints, names


def from_dict(cls: type[T], data: dict[str, Any] | None, _prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, coercing values; missing keys keep their defaults.

    Raises:
        ValueError: on an unknown key (the message lists the valid keys) or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{_prefix or cls.__name__}: expected a mapping, got {data!r}")
    hints, names = _fields(cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"in {_prefix!r} " if _prefix else ""
        raise ValueError(f"unknown config key(s) {unknown} {where}({cls.__name__}); valid keys: {names}")
    kwargs = {}
    for name, value in data.items():
        where = f"{_prefix}.{name}" if _prefix else name
        kwargs[name] = _coerce(value, hints[name], where)
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like 'section.key=value'")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` overrides in the raw dict ``data`` (in place), checking each path against ``cls``.

    Values are parsed as YAML (``true``, ``null``, ``[0.9, 0.95]``, ``1e-4``) and coerced to the field type
    later by ``from_dict``. Paths may go below a ``dict`` field (e.g. ``model.overrides.hidden_size=64``).
    """
    for item in overrides:
        path, value = _parse_override(item)
        node, tp = data, cls
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if tp is not None and dataclasses.is_dataclass(tp):
                hints, names = _fields(tp)
                if part not in names:
                    where = ".".join(path[:depth]) or "<top level>"
                    raise ValueError(
                        f"unknown config key {'.'.join(path)!r}: valid keys under {where}: {names}"
                    )
                tp = hints[part]
                if typing.get_origin(tp) in (typing.Union, types.UnionType):
                    inner = [a for a in typing.get_args(tp) if a is not type(None)]
                    tp = inner[0] if len(inner) == 1 else None
            elif tp is not None and (typing.get_origin(tp) is dict or tp is dict):
                tp = None  # free-form below a dict field
            elif tp is not None and not last:
                raise ValueError(f"override {item!r}: {'.'.join(path[:depth])!r} is not a section")
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return data


def load_config(path: str | Path | None, cls: type[T], overrides: Sequence[str] | None = None) -> T:
    """Read a YAML config into dataclass ``cls`` and apply dotted overrides.

    Args:
        path: a YAML file whose nested mappings mirror ``cls``; None uses the dataclass defaults alone.
        cls: the top-level config dataclass.
        overrides: ``["optim.lr=3e-4", "train.max_steps=10", ...]``, applied after the file.

    Returns:
        An instance of ``cls`` (each nested dataclass validated by its ``__post_init__``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: the top level of a config must be a mapping, got {type(data).__name__}"
            )
    apply_overrides(cls, data, overrides or [])
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write a dataclass config as YAML (every field, defaults included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def parse_config_args(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Command line of a recipe: ``--config FILE [--set a.b=c ...] [--resume latest|DIR] [--overwrite]``.

    ``--resume X`` is a shortcut for ``--set train.resume=X``; ``--overwrite`` for ``--set train.overwrite=true``
    (or ``overwrite=true`` for configs without a ``train`` section).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=str, default=None, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. --set optim.lr=3e-4 train.max_steps=100",
    )
    parser.add_argument("--resume", type=str, default=None, help="'latest' or a checkpoint directory")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in a used output_dir, deleting its previous run"
    )
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    sections = {f.name for f in dataclasses.fields(cls)}
    if args.resume is not None:
        overrides.append(f"train.resume={args.resume}")
    if args.overwrite:
        overrides.append("train.overwrite=true" if "train" in sections else "overwrite=true")
    return load_config(args.config, cls, overrides)
