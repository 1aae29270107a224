"""The sampling options of the D-AR prior: one frozen dataclass, validated once (no torch at import).

The sampler (:mod:`llama_ar.sampling`), both pipeline verbs, the ``dar`` command line (its flags are generated
from these fields, with no defaults of their own) and the recipe configs all build from
:class:`SamplingOptions`, so every default lives here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    import torch

__all__ = ["GENERATION_CONFIG_FIELDS", "CacheKind", "CfgSchedule", "SamplingOptions", "cfg_scales"]

CfgSchedule = Literal["constant", "linear"]
CacheKind = Literal["dynamic", "static", "preallocated"]
MAX_CFG_SCALE = 1000.0
#: The fields a checkpoint's ``generation_config.json`` may set as its sampling defaults: transformers' names and
#: meanings, so ``pipe(...)`` and plain ``ar_model.generate(...)`` draw with the same defaults.
GENERATION_CONFIG_FIELDS = ("temperature", "top_k", "top_p")


def _real(name: str, value: Any) -> float:
    if isinstance(value, (bool, str, bytes)):  # the official "start,end" strings are not accepted
        raise TypeError(
            f"{name} must be a real number, got {value!r}; for a ramp pass cfg_schedule='linear' with "
            "cfg_scale_start and cfg_scale."
        )
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    return value


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    return int(value.__index__())


@dataclass(frozen=True)
class SamplingOptions:
    """How codes are drawn; every field is validated once, here.

    Attributes:
        cfg_scale: Guidance scale (constant), or the final scale of the linear ramp; in [0, 1000]. 1 with a
            constant schedule disables guidance (B rows instead of 2B); 0 samples the null class alone.
        cfg_schedule: ``"constant"`` or ``"linear"``: ``linspace(cfg_scale_start, cfg_scale, N)[k]`` at code k
            (absolute position, also with a prefix; paper D-AR-L: 1.1 → 8.0).
        cfg_scale_start: Scale at code 0 of the linear ramp (ignored when constant).
        cfg_interval: −1 (off) or j ≥ 0: codes with index > j use the conditional logits unguided. (The official
            loop counts from code 1, so its ``--cfg-interval j`` guides one more code: pass j + 1.)
        temperature: Softmax temperature > 0.
        top_k: Keep the k most likely codes (0 = off; 1 = greedy).
        top_p: Nucleus sampling mass in (0, 1] (1 = off).
        cache: KV cache: ``"preallocated"`` (one buffer, attention over the filled part only; fastest on CPU),
            ``"dynamic"`` (``DynamicCache``) or ``"static"`` (``StaticCache``). All give the same codes.
        fast_linear: Run the model's linear layers through oneDNN, with the weights reordered once per call for
            the decode steps' row count (:mod:`llama_ar.kernels`; one more copy of the linear weights in memory
            while sampling); None enables it for fp32 models on a CPU other than Intel's, where MKL is as fast
            (:func:`llama_ar.kernels.fast_linear_default`). Outputs equal the plain path up to float summation
            order.
    """

    cfg_scale: float = 4.0
    cfg_schedule: CfgSchedule = "constant"
    cfg_scale_start: float = 1.0
    cfg_interval: int = -1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cache: CacheKind = "preallocated"
    fast_linear: bool | None = None

    def __post_init__(self) -> None:
        for name in ("cfg_scale", "cfg_scale_start"):
            value = _real(name, getattr(self, name))
            if not 0.0 <= value <= MAX_CFG_SCALE:
                raise ValueError(
                    f"{name} must lie in [0, {MAX_CFG_SCALE:g}] (the paper uses 1.1–10), got {value}."
                )
            object.__setattr__(self, name, value)
        if self.cfg_schedule not in get_args(CfgSchedule):
            raise ValueError(
                f"cfg_schedule must be one of {get_args(CfgSchedule)}, got {self.cfg_schedule!r}."
            )
        interval = _integer("cfg_interval", self.cfg_interval)
        if interval < -1:
            raise ValueError(f"cfg_interval must be -1 (off) or a code index ≥ 0, got {interval}.")
        temperature = _real("temperature", self.temperature)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding.")
        top_k = _integer("top_k", self.top_k)
        if top_k < 0:
            raise ValueError(f"top_k must be an int ≥ 0 (0 disables it), got {top_k}.")
        top_p = _real("top_p", self.top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] (1 disables it), got {top_p}.")
        if self.cache not in get_args(CacheKind):
            raise ValueError(f"cache must be one of {get_args(CacheKind)}, got {self.cache!r}.")
        if self.fast_linear not in (None, True, False):
            raise TypeError(f"fast_linear must be None, True or False, got {self.fast_linear!r}.")
        for name, value in (
            ("cfg_interval", interval),
            ("temperature", temperature),
            ("top_k", top_k),
            ("top_p", top_p),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def build(cls, options: SamplingOptions | None = None, **fields: Any) -> SamplingOptions:
        """``options`` (or the defaults) with ``fields`` changed; unknown field names raise ``TypeError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"unknown sampling options {unknown}; the options are {sorted(known)}.")
        if options is None:
            return cls(**fields)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a SamplingOptions, got {type(options).__name__}.")
        return dataclasses.replace(options, **fields) if fields else options

    @classmethod
    def defaults_from(cls, generation_config: Any) -> dict[str, Any]:
        """The sampling defaults a ``transformers.GenerationConfig`` sets: its non-None ``temperature``,
        ``top_k`` and ``top_p`` (:data:`GENERATION_CONFIG_FIELDS`), validated; ``{}`` for None.

        Raises:
            ValueError / TypeError: a value the sampler refuses; the message names ``generation_config.json``.
        """
        if generation_config is None:
            return {}
        found = {
            name: getattr(generation_config, name)
            for name in GENERATION_CONFIG_FIELDS
            if getattr(generation_config, name, None) is not None
        }
        try:
            cls(**found)
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"the AR model's generation_config.json sets {found}, which the sampler refuses: {error} Fix it "
                "with llama_ar.write_generation_config(folder, temperature=..., top_k=..., top_p=...)."
            ) from None
        return found

    def scales(self, num_tokens: int) -> torch.Tensor:
        """(N,) float32 guidance scale of every code position."""
        import torch

        if self.cfg_schedule == "constant":
            return torch.full((num_tokens,), self.cfg_scale, dtype=torch.float32)
        return torch.linspace(self.cfg_scale_start, self.cfg_scale, num_tokens, dtype=torch.float32)

    def warpers(self) -> list:
        """transformers' temperature / top-k / top-p logits warpers for the enabled options."""
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        warpers: list = []
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            warpers.append(TopKLogitsWarper(top_k=self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=self.top_p))
        return warpers


def cfg_scales(
    num_tokens: int, cfg_scale: float, cfg_schedule: CfgSchedule = "constant", cfg_scale_start: float = 1.0
) -> torch.Tensor:
    """(N,) float32 guidance scale of every code position (see :class:`SamplingOptions`)."""
    return SamplingOptions(
        cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, cfg_scale_start=cfg_scale_start
    ).scales(num_tokens)
