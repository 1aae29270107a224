"""Stand-ins that let the official D-AR modules import and run on CPU: for the parity tests and ``make bench``.

The official repository (showlab/D-AR) imports ``timm``, ``torchvision`` and ``einops`` at module level. None of
them is a dependency of this project (torchvision does not even import beside our torch build, see
stack_notes), so this file registers small modules of our own in ``sys.modules`` when the real packages are
missing:

- ``timm.layers.mlp.Mlp`` / ``timm.layers.Mlp``: fc1 -> act -> drop -> fc2 with timm's attribute names, so state
  dict keys are ``mlp.fc1.weight`` etc. exactly as in the released checkpoints;
- ``timm.layers.drop.DropPath`` / ``timm.layers.DropPath``: stochastic depth (identity at p = 0 or in eval);
- ``torchvision.transforms.functional``: imported but unused by the modules we build;
- ``einops.rearrange`` / ``einops.repeat``: a small generic implementation of the pattern language (named axes,
  parenthesised groups, literal ``1``), enough for every pattern the official tokenizer uses.

The official repository also has a top-level package named ``tokenizer``, which collides with ours.
``load_official_modules(repo)`` therefore imports the official modules with the colliding names swapped out of
``sys.modules`` and restores ours afterwards; the returned module objects keep working. It also removes the
stand-ins again once the official modules are imported (they hold their own references), so libraries that
probe for ``torchvision`` (transformers does) never see them.

Used by ``tests/dar/test_official_parity.py`` and :mod:`dar.bench.official`, never by the model packages.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

__all__ = ["install_official_stubs", "load_official_modules", "rearrange", "repeat"]

_OFFICIAL_TOP_LEVEL = ("tokenizer", "autoregressive", "utils")


# ---------------------------------------------------------------------------------------------------------------
# timm stand-ins
# ---------------------------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """Two-layer MLP with timm's attribute names: fc1 -> act -> drop1 -> fc2 -> drop2."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
        **_: object,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Per-sample stochastic depth; the identity when ``drop_prob`` is 0 or in eval mode."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * (mask / keep if self.scale_by_keep else mask)


# ---------------------------------------------------------------------------------------------------------------
# einops stand-in
# ---------------------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\(|\)|[A-Za-z_][A-Za-z0-9_]*|1")


def _parse_side(side: str) -> list[list[str]]:
    """'b (h w) 1 c' -> [['b'], ['h', 'w'], [], ['c']] (a literal 1 is an empty group)."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for token in _TOKEN.findall(side):
        if token == "(":
            current = []
        elif token == ")":
            groups.append(current or [])
            current = None
        elif current is not None:
            if token != "1":
                current.append(token)
        else:
            groups.append([] if token == "1" else [token])
    return groups


def _rearrange_impl(
    tensor: torch.Tensor, pattern: str, sizes: dict[str, int], allow_new: bool
) -> torch.Tensor:
    left_text, right_text = pattern.split("->")
    left, right = _parse_side(left_text), _parse_side(right_text)
    if len(left) != tensor.ndim:
        raise ValueError(
            f"pattern {pattern!r} expects {len(left)} dims, got a tensor of shape {tuple(tensor.shape)}"
        )
    known = dict(sizes)
    for group, dim in zip(left, tensor.shape):
        unknown = [name for name in group if name not in known]
        product = 1
        for name in group:
            if name in known:
                product *= known[name]
        if len(unknown) > 1:
            raise ValueError(f"cannot infer axes {unknown} in {pattern!r}")
        if unknown:
            known[unknown[0]] = dim // product
        elif product != dim:
            raise ValueError(f"group {group} of {pattern!r} has size {product}, tensor dim is {dim}")
    left_axes = [name for group in left for name in group]
    right_axes = [name for group in right for name in group]
    x = tensor.reshape([known[name] for name in left_axes])
    new_axes = [name for name in right_axes if name not in left_axes]
    if new_axes and not allow_new:
        raise ValueError(f"rearrange cannot create axes {new_axes}; use repeat")
    for name in new_axes:
        x = x.unsqueeze(-1)
        left_axes = left_axes + [name]
    x = x.permute([left_axes.index(name) for name in right_axes])
    if new_axes:
        x = x.expand([known[name] for name in right_axes])
    out_shape = []
    for group in right:
        product = 1
        for name in group:
            product *= known[name]
        out_shape.append(product)
    return x.reshape(out_shape)


def rearrange(tensor: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """einops-style axis rearrangement (no reductions, no ellipsis)."""
    return _rearrange_impl(tensor, pattern, sizes, allow_new=False)


def repeat(tensor: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """einops-style repeat: axes present only on the right side are broadcast to the given sizes."""
    return _rearrange_impl(tensor, pattern, sizes, allow_new=True).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------------------
def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False
    return True


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package="__path__" in attributes)
    module.__dict__.update(attributes)
    module.__dict__["__dar_stub__"] = True
    return module


def install_official_stubs() -> list[str]:
    """Registers stand-in ``timm``, ``torchvision`` and ``einops`` modules where the real ones are missing.

    Returns:
        The names of the modules that were registered (empty when every real package imports).
    """
    installed: list[str] = []
    if not _importable("timm"):
        mlp = _module("timm.layers.mlp", Mlp=Mlp)
        drop = _module("timm.layers.drop", DropPath=DropPath)
        layers = _module("timm.layers", Mlp=Mlp, DropPath=DropPath, mlp=mlp, drop=drop, __path__=[])
        timm = _module("timm", layers=layers, __path__=[])
        for module in (timm, layers, mlp, drop):
            sys.modules[module.__name__] = module
            installed.append(module.__name__)
    if not _importable("torchvision"):
        functional = _module("torchvision.transforms.functional")
        transforms = _module("torchvision.transforms", functional=functional, __path__=[])
        torchvision = _module("torchvision", transforms=transforms, __path__=[])
        for module in (torchvision, transforms, functional):
            sys.modules[module.__name__] = module
            installed.append(module.__name__)
    if not _importable("einops"):
        sys.modules["einops"] = _module("einops", rearrange=rearrange, repeat=repeat)
        installed.append("einops")
    return installed


@contextmanager
def _official_namespace(repo: Path):
    """Temporarily hides our colliding top-level packages and puts the official checkout first on sys.path."""
    saved = {
        name: module for name, module in sys.modules.items() if name.split(".")[0] in _OFFICIAL_TOP_LEVEL
    }
    for name in saved:
        del sys.modules[name]
    # The official directories have no __init__.py (namespace packages), and a regular package of the same
    # name anywhere on sys.path (ours) would win, so the official top-level packages are registered by hand.
    for name in _OFFICIAL_TOP_LEVEL:
        sys.modules[name] = _module(name, __path__=[str(repo / name)])
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        for name in [name for name in sys.modules if name.split(".")[0] in _OFFICIAL_TOP_LEVEL]:
            sys.modules[f"dar_official.{name}"] = sys.modules.pop(name)
        sys.modules.update(saved)


def load_official_modules(repo: str | Path) -> types.SimpleNamespace:
    """Imports the official tokenizer and GPT modules from a checkout of showlab/D-AR.

    Args:
        repo: root of the official checkout (it contains ``tokenizer/tokenizer_image/vq_model.py``).

    Returns:
        Namespace with ``vq_model`` (official ``tokenizer.tokenizer_image.vq_model``), ``gpt``
        (``autoregressive.models.gpt``) and ``generate`` (``autoregressive.models.generate``) module objects.
    """
    repo = Path(repo).resolve()
    if not (repo / "tokenizer" / "tokenizer_image" / "vq_model.py").is_file():
        raise FileNotFoundError(
            f"{repo} is not a checkout of showlab/D-AR (no tokenizer/tokenizer_image/vq_model.py)"
        )
    installed = install_official_stubs()
    try:
        with _official_namespace(repo):
            vq_model = importlib.import_module("tokenizer.tokenizer_image.vq_model")
            gpt = importlib.import_module("autoregressive.models.gpt")
            generate = importlib.import_module("autoregressive.models.generate")
    finally:  # the official modules keep their references; other code must not see the stand-ins
        for name in installed:
            sys.modules.pop(name, None)
    return types.SimpleNamespace(vq_model=vq_model, gpt=gpt, generate=generate)
