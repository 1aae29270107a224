"""Sampling codes from the D-AR prior: KV-cached decoding, batched classifier-free guidance, streaming groups.

Implements D-AR's generation (Gao & Shou 2025, §3.3–§3.4 and §4: linear CFG schedule 1.1 → 8.0 for D-AR-L;
Fig. 6 layout control by prefix forcing) as our own decode loop over a stock ``LlamaForCausalLM``:

* the sequence is ``[class id, code_0 … code_{N−1}]`` with explicit positions 0 … N (class token at 0);
* classifier-free guidance runs the conditional rows and the null-class rows in ONE forward of 2B rows
  (rows ``[:B]`` conditional, ``[B:]`` null) and mixes the fp32 logits as ``uncond + s·(cond − uncond)``;
* ``s`` is constant or ramps linearly from ``cfg_scale_start`` to ``cfg_scale``:
  ``linspace(cfg_scale_start, cfg_scale, N)[k]`` for code k (absolute position, also with a prefix);
* ``cfg_interval = j ≥ 0`` samples codes with index > j from the conditional logits alone. (The official loop
  counts from code 1, so its ``--cfg-interval j`` guides one more code than ours: pass j + 1 to reproduce it.)
* temperature / top-k / top-p use ``transformers``' logits warpers; logits are restricted to the code ids
  (``[..., :codebook_size]``, equivalent to masking the class and null ids with −inf), so a non-code id can
  never be sampled; ``torch.multinomial`` draws with the caller's ``generator``;
* ``prefix_codes`` are teacher-forced into the prefill (both guidance halves) and returned unchanged;
* :func:`iter_code_groups` yields each group of ``tokens_per_step`` codes as soon as its last code exists, which
  is what lets the tokenizer start denoising step k before group k + 1 is sampled (D-AR's streaming).

Speed notes (CPU): only the last position and only the code rows go through the head, the decode steps run
their linear layers as ``(W·xᵀ)ᵀ`` (``fast_linear``, :mod:`llama_ar.kernels`; 2.4x on dar-b's step), input /
position tensors of the decode step are allocated once and reused, and the mixing / warpers work on (B, K)
fp32 tensors. KV caches: ``"dynamic"`` (``DynamicCache``) concatenates, i.e. copies the whole cache at every
step; ``"static"`` (``StaticCache``) preallocates but attends over the padded length with a mask;
``"preallocated"`` (the default; a ``DynamicLayer`` writing into one preallocated buffer and returning views of
the filled part) does neither and was the fastest on CPU (dar-b, B=4 + CFG, 1 thread: 39 s vs 44–54 s dynamic
and 44 s static for 256 codes on a loaded 2-core machine). All three give the same codes (tested).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from .cache import CACHE_KINDS, check_cache_filled, make_cache
from .kernels import SkinnyLinearMode
from .layout import VocabLayout

__all__ = ["cfg_scales", "iter_code_groups", "sample_codes"]

logger = logging.getLogger(__name__)

LogitsCallback = Callable[[int, torch.Tensor], None]


def cfg_scales(
    num_tokens: int,
    cfg_scale: float,
    cfg_schedule: Literal["constant", "linear"] = "constant",
    cfg_scale_start: float = 1.0,
) -> torch.Tensor:
    """Guidance scale of every code position.

    Args:
        num_tokens: Number of codes N.
        cfg_scale: Constant scale, or the final scale (at code N − 1) of the linear ramp.
        cfg_schedule: ``"constant"`` or ``"linear"``.
        cfg_scale_start: Scale at code 0 of the linear ramp (ignored when constant).

    Returns:
        (N,) float32 tensor; ``linspace(cfg_scale_start, cfg_scale, N)`` for ``"linear"``.
    """
    values = []
    for name, value in (("cfg_scale", cfg_scale), ("cfg_scale_start", cfg_scale_start)):
        try:
            if isinstance(value, (str, bytes)):  # the official "start,end" strings are not accepted
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a real number, got {value!r}; for a ramp pass cfg_schedule='linear' "
                "with cfg_scale_start and cfg_scale."
            ) from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}.")
        values.append(value)
    if cfg_schedule == "constant":
        return torch.full((num_tokens,), values[0], dtype=torch.float32)
    if cfg_schedule == "linear":
        return torch.linspace(values[1], values[0], num_tokens, dtype=torch.float32)
    raise ValueError(f"cfg_schedule must be 'constant' or 'linear', got {cfg_schedule!r}.")


def _build_warpers(temperature: float, top_k: int, top_p: float) -> list:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(
            f"temperature must be a positive number, got {temperature!r}; use top_k=1 for greedy decoding."
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int ≥ 0 (0 disables it), got {top_k!r}.")
    if not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1] (1 disables it), got {top_p!r}.")
    warpers: list = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=float(top_p)))
    return warpers


def _decode(
    model: torch.nn.Module,
    layout: VocabLayout,
    class_tokens: torch.Tensor,
    prefix: torch.Tensor,
    num_tokens: int,
    tokens_per_step: int,
    scales: list[float] | None,
    cfg_interval: int,
    warpers: list,
    generator: torch.Generator | None,
    cache_kind: str,
    logits_callback: LogitsCallback | None,
) -> Iterator[torch.Tensor]:
    """The decode loop proper (runs under inference mode with the model in eval mode; see iter_code_groups)."""
    batch, num_prefix = prefix.shape
    device = class_tokens.device
    guided = scales is not None
    num_codes = layout.codebook_size
    backbone, head = model.model, model.lm_head
    if type(head) is torch.nn.Linear and not (head._forward_hooks or head._forward_pre_hooks):
        # a plain head: compute its code rows only (the class / null rows are never sampled)

        def code_logits(hidden: torch.Tensor) -> torch.Tensor:
            bias = None if head.bias is None else head.bias[:num_codes]
            return F.linear(hidden, head.weight[:num_codes], bias)
    else:  # wrapped (LoRA, quantised) or hooked (offloading, user hooks): call it as it is

        def code_logits(hidden: torch.Tensor) -> torch.Tensor:
            return head(hidden)[:, :num_codes]

    codes = torch.empty(batch, num_tokens, dtype=torch.long, device=device)  # (B, N)
    codes[:, :num_prefix] = prefix

    # Prefill: [class, prefix_0 … prefix_{P−1}] at positions 0 … P; CFG rows [cond ; null].
    first = torch.cat([class_tokens, layout.null_tokens(batch, device)]) if guided else class_tokens
    rows = first.shape[0]
    prompt = prefix.repeat(2, 1) if guided else prefix
    input_ids = torch.cat([first[:, None], prompt], dim=1)  # (rows, P + 1)
    position_ids = torch.arange(num_prefix + 1, device=device)[None]  # (1, P + 1)
    cache = make_cache(cache_kind, model.config, num_tokens)
    hidden = backbone(input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True)
    hidden = hidden.last_hidden_state[:, -1]  # (rows, d)
    check_cache_filled(cache, input_ids.shape[1])

    for group in range(num_prefix // tokens_per_step):
        yield codes[:, group * tokens_per_step : (group + 1) * tokens_per_step]

    step_ids = torch.empty(rows, 1, dtype=torch.long, device=device)  # reused by every decode step
    step_pos = torch.empty(1, 1, dtype=torch.long, device=device)
    for k in range(num_prefix, num_tokens):
        logits = code_logits(hidden).float()  # (rows, K): class / null ids are never sampled
        if guided:
            cond = logits[:batch]
            if cfg_interval < 0 or k <= cfg_interval:
                uncond = logits[batch:]
                logits = uncond + scales[k] * (cond - uncond)
            else:
                logits = cond
        if logits_callback is not None:
            logits_callback(k, logits)
        for warper in warpers:
            logits = warper(None, logits)
        probs = torch.softmax(logits, dim=-1)
        next_codes = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        codes[:, k] = next_codes[:, 0]
        if (k + 1) % tokens_per_step == 0:
            yield codes[:, k + 1 - tokens_per_step : k + 1]
        if k + 1 == num_tokens:
            break
        step_ids[:batch] = next_codes
        if guided:
            step_ids[batch:] = next_codes
        step_pos.fill_(k + 1)
        hidden = backbone(input_ids=step_ids, position_ids=step_pos, cache=cache, use_cache=True)
        hidden = hidden.last_hidden_state[:, -1]


def _run_in_inference_mode(
    model: torch.nn.Module, inner: Iterator[torch.Tensor], fast_linear: bool
) -> Iterator[torch.Tensor]:
    """Drive ``inner`` in eval + inference mode one step at a time, restoring the caller's state in between.

    Each ``next`` puts every submodule in eval mode and enables ``torch.inference_mode`` (and, with
    ``fast_linear``, :class:`llama_ar.kernels.SkinnyLinearMode`); all are undone before the group is handed
    back, so the caller's code between groups runs with its own grad mode, module modes and kernels.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        while True:
            model.eval()
            try:
                with torch.inference_mode(), SkinnyLinearMode() if fast_linear else contextlib.nullcontext():
                    group = next(inner)
            except StopIteration:
                return
            finally:
                for module, training in modes:
                    module.training = training
            yield group.clone()  # a normal tensor, usable outside inference mode
    finally:
        inner.close()


def _prepare_prefix(prefix_codes, layout: VocabLayout, batch: int, num_tokens: int, device) -> torch.Tensor:
    if prefix_codes is None:
        return torch.empty(batch, 0, dtype=torch.long, device=device)
    if not isinstance(prefix_codes, torch.Tensor):
        raise TypeError(
            f"prefix_codes must be an int64 tensor of shape (P,) or (B, P), got {type(prefix_codes).__name__}."
        )
    layout.check_codes(prefix_codes, name="prefix_codes")
    if prefix_codes.dim() == 1:
        prefix_codes = prefix_codes[None].expand(batch, -1)
    if prefix_codes.dim() != 2 or prefix_codes.shape[0] != batch:
        raise ValueError(
            f"prefix_codes must have shape (P,) or (B, P) with B={batch} class labels, got {tuple(prefix_codes.shape)}."
        )
    if prefix_codes.shape[1] >= num_tokens:
        raise ValueError(
            f"prefix_codes has {prefix_codes.shape[1]} codes but must be shorter than num_tokens={num_tokens}; "
            "pass fewer layout tokens."
        )
    return prefix_codes.to(device=device, dtype=torch.long).contiguous()


def iter_code_groups(
    model: torch.nn.Module,
    class_labels: torch.Tensor | Sequence[int] | int,
    num_tokens: int = 256,
    tokens_per_step: int = 32,
    *,
    cfg_scale: float = 4.0,
    cfg_schedule: Literal["constant", "linear"] = "constant",
    cfg_scale_start: float = 1.0,
    cfg_interval: int = -1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    prefix_codes: torch.Tensor | None = None,
    cache: Literal["dynamic", "static", "preallocated"] = "preallocated",
    logits_callback: LogitsCallback | None = None,
    fast_linear: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Sample codes and yield them group by group, each as soon as its last code has been sampled.

    Arguments are validated when this function is called (not lazily at the first ``next``). The model is put
    in eval mode and ``torch.inference_mode`` is enabled only while a group is being computed; the caller's
    module modes and grad mode are restored before each group is yielded.

    Args:
        model: A ``LlamaForCausalLM`` carrying a ``config.dar_layout`` (built by :func:`llama_ar.build_ar_model`
            or loaded with ``from_pretrained``). Any device / dtype; logits are mixed in fp32.
        class_labels: (B,) integer class indices in ``[0, num_classes)`` (tensor, list or int).
        num_tokens: Codes per image N; ``≤ max_position_embeddings − 1`` and a multiple of ``tokens_per_step``.
        tokens_per_step: Codes per yielded group (32 for the paper's tokenizer).
        cfg_scale: Guidance scale (constant) or the end of the linear ramp; ``1`` with a constant schedule
            disables guidance and runs B rows only.
        cfg_schedule: ``"constant"`` or ``"linear"`` (``linspace(cfg_scale_start, cfg_scale, N)[k]`` at code k).
        cfg_scale_start: Scale at code 0 for the linear schedule (paper, D-AR-L: 1.1 → 8.0).
        cfg_interval: −1 (off) or j ≥ 0: codes with index > j use the conditional logits unguided.
        temperature: Softmax temperature > 0.
        top_k: Keep the k most likely codes (0 = off; 1 = greedy).
        top_p: Nucleus sampling threshold in (0, 1] (1 = off).
        generator: ``torch.Generator`` on the model's device for ``torch.multinomial``.
        prefix_codes: Optional (P,) or (B, P) int64 codes in ``[0, codebook_size)`` with P < N, forced as the
            first P codes (layout control); they are returned unchanged.
        cache: KV cache: ``"preallocated"`` (default; preallocated buffer, attention over the filled part only,
            fastest on CPU), ``"dynamic"`` (``DynamicCache``) or ``"static"`` (``StaticCache``).
        logits_callback: Optional ``f(k, logits)`` called for every sampled code k with the (B, codebook_size)
            fp32 guided logits before the warpers (read-only; for inspection and tests).
        fast_linear: Run the decode steps' linear layers as ``(W·xᵀ)ᵀ`` (:mod:`llama_ar.kernels`), about twice
            as fast on CPU for few rows; ``None`` (default) enables it for fp32 models on CPU. The model is not
            modified; outputs equal the plain path up to float summation order.

    Yields:
        (B, tokens_per_step) int64 code groups in order, on the model's device; groups fully covered by the
        prefix come right after the prefill.
    """
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "lm_head") or not hasattr(model, "model"):
        raise TypeError(
            f"model must be a LlamaForCausalLM (with .model and .lm_head), got {type(model).__name__}."
        )
    layout = VocabLayout.from_config(model.config)
    for name, value in (("num_tokens", num_tokens), ("tokens_per_step", tokens_per_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if num_tokens % tokens_per_step:
        raise ValueError(
            f"num_tokens={num_tokens} is not a multiple of tokens_per_step={tokens_per_step}; "
            "use the tokenizer's num_tokens and tokens_per_step."
        )
    capacity = model.config.max_position_embeddings - 1
    if num_tokens > capacity:
        raise ValueError(
            f"num_tokens={num_tokens} exceeds the model's capacity of {capacity} codes "
            "(max_position_embeddings − 1); sample fewer codes or build the model with a larger num_tokens."
        )
    if isinstance(cfg_interval, bool) or not isinstance(cfg_interval, int) or cfg_interval < -1:
        raise ValueError(f"cfg_interval must be -1 (off) or a code index ≥ 0, got {cfg_interval!r}.")
    if cache not in CACHE_KINDS:
        raise ValueError(f"cache must be 'dynamic', 'static' or 'preallocated', got {cache!r}.")
    warpers = _build_warpers(temperature, top_k, top_p)
    schedule = cfg_scales(num_tokens, cfg_scale, cfg_schedule, cfg_scale_start)
    guided = bool((schedule != 1.0).any())

    device = model.get_input_embeddings().weight.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the model is on {device}; create it with "
            f"torch.Generator(device='{device.type}')."
        )
    class_tokens = layout.class_tokens(class_labels, device=device)
    prefix = _prepare_prefix(prefix_codes, layout, class_tokens.shape[0], num_tokens, device)
    inner = _decode(
        model,
        layout,
        class_tokens,
        prefix,
        num_tokens,
        tokens_per_step,
        schedule.tolist() if guided else None,
        cfg_interval,
        warpers,
        generator,
        cache,
        logits_callback,
    )
    if fast_linear is None:
        fast_linear = device.type == "cpu" and model.get_input_embeddings().weight.dtype == torch.float32
    return _run_in_inference_mode(model, inner, bool(fast_linear))


def sample_codes(
    model: torch.nn.Module,
    class_labels: torch.Tensor | Sequence[int] | int,
    num_tokens: int = 256,
    *,
    cfg_scale: float = 4.0,
    cfg_schedule: Literal["constant", "linear"] = "constant",
    cfg_scale_start: float = 1.0,
    cfg_interval: int = -1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    prefix_codes: torch.Tensor | None = None,
    cache: Literal["dynamic", "static", "preallocated"] = "preallocated",
    logits_callback: LogitsCallback | None = None,
    fast_linear: bool | None = None,
) -> torch.Tensor:
    """Sample all ``num_tokens`` codes at once (same arguments and randomness as :func:`iter_code_groups`).

    Returns:
        (B, num_tokens) int64 codes in ``[0, codebook_size)``; the first P equal ``prefix_codes``.
    """
    groups = iter_code_groups(
        model,
        class_labels,
        num_tokens,
        num_tokens,
        cfg_scale=cfg_scale,
        cfg_schedule=cfg_schedule,
        cfg_scale_start=cfg_scale_start,
        cfg_interval=cfg_interval,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
        prefix_codes=prefix_codes,
        cache=cache,
        logits_callback=logits_callback,
        fast_linear=fast_linear,
    )
    return torch.cat(list(groups), dim=1)
