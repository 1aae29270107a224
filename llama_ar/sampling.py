"""Sampling codes from the D-AR prior: KV-cached decoding, batched classifier-free guidance, streaming groups.

Implements D-AR's generation (Gao & Shou 2025, §3.3–§3.4 and §4: linear CFG schedule 1.1 → 8.0 for D-AR-L;
Fig. 6 layout control by prefix forcing) as our own decode loop over a stock ``LlamaForCausalLM``, called
through its ``forward`` (so accelerate / diffusers offload hooks fire):

* the sequence is ``[class id, code_0 … code_{N−1}]`` with explicit positions 0 … N (class token at 0);
* classifier-free guidance runs the conditional rows and the null-class rows in ONE forward of 2B rows
  (rows ``[:B]`` conditional, ``[B:]`` null) and mixes the fp32 logits as ``uncond + s·(cond − uncond)``;
* every option lives in one frozen :class:`~llama_ar.options.SamplingOptions` (validated once), which the
  pipeline, the CLI and the recipe configs build from.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .cache import check_cache_filled, make_cache
from .kernels import SkinnyLinearMode, fast_linear_default
from .layout import VocabLayout
from .options import SamplingOptions

__all__ = ["SamplingOptions", "iter_code_groups", "sample_codes"]

logger = logging.getLogger(__name__)

LogitsCallback = Callable[[int, torch.Tensor], None]
Generators = torch.Generator | list[torch.Generator] | None


def _draw(
    probs: torch.Tensor, generator: Generators, position: int, options: SamplingOptions
) -> torch.Tensor:
    """One code per row from (B, K) probabilities: (B, 1) int64; a list of generators draws row i with the i-th."""
    try:
        if isinstance(generator, list):
            return torch.cat([torch.multinomial(p[None], 1, generator=g) for p, g in zip(probs, generator)])
        return torch.multinomial(probs, 1, generator=generator)
    except RuntimeError as error:
        if "inf" not in str(error) and "nan" not in str(error):
            raise
        raise ValueError(
            f"the sampling probabilities of code {position} are not finite (cfg_scale={options.cfg_scale}, "
            f"temperature={options.temperature}): lower cfg_scale or raise temperature."
        ) from None


def _decode(
    model: torch.nn.Module,
    layout: VocabLayout,
    class_tokens: torch.Tensor,
    prefix: torch.Tensor,
    num_tokens: int,
    tokens_per_step: int,
    options: SamplingOptions,
    generator: Generators,
    logits_callback: LogitsCallback | None,
) -> Iterator[torch.Tensor]:
    """The decode loop proper (runs under inference mode with the model in eval mode; see iter_code_groups)."""
    batch, num_prefix = prefix.shape
    device = class_tokens.device
    schedule = options.scales(num_tokens)
    scales = schedule.tolist() if bool((schedule != 1.0).any()) else None  # None: no guidance, B rows
    warpers = options.warpers()
    num_codes = layout.codebook_size

    codes = torch.empty(batch, num_tokens, dtype=torch.long, device=device)  # (B, N)
    codes[:, :num_prefix] = prefix

    def next_logits(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = model(
            input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=1
        )
        return out.logits[:, -1, :num_codes].float()  # (rows, K): class / null ids are never sampled

    # Prefill: [class, prefix_0 … prefix_{P−1}] at positions 0 … P; CFG rows [cond ; null].
    first = torch.cat([class_tokens, layout.null_tokens(batch, device)]) if scales else class_tokens
    rows = first.shape[0]
    prompt = prefix.repeat(2, 1) if scales else prefix
    input_ids = torch.cat([first[:, None], prompt], dim=1)  # (rows, P + 1)
    cache = make_cache(options.cache, model.config, num_tokens)
    logits = next_logits(input_ids, torch.arange(num_prefix + 1, device=device)[None])
    check_cache_filled(cache, input_ids.shape[1])

    for group in range(num_prefix // tokens_per_step):
        yield codes[:, group * tokens_per_step : (group + 1) * tokens_per_step]

    step_ids = torch.empty(rows, 1, dtype=torch.long, device=device)  # reused by every decode step
    step_pos = torch.empty(1, 1, dtype=torch.long, device=device)
    for k in range(num_prefix, num_tokens):
        if scales:
            cond = logits[:batch]
            if options.cfg_interval < 0 or k <= options.cfg_interval:
                uncond = logits[batch:]
                logits = uncond + scales[k] * (cond - uncond)
            else:
                logits = cond
        if logits_callback is not None:
            logits_callback(k, logits)
        for warper in warpers:
            logits = warper(None, logits)
        next_codes = _draw(torch.softmax(logits, dim=-1), generator, k, options)  # (B, 1)
        codes[:, k] = next_codes[:, 0]
        if (k + 1) % tokens_per_step == 0:
            yield codes[:, k + 1 - tokens_per_step : k + 1]
        if k + 1 == num_tokens:
            break
        step_ids[:batch] = next_codes
        if scales:
            step_ids[batch:] = next_codes
        step_pos.fill_(k + 1)
        logits = next_logits(step_ids, step_pos)


def _run_in_inference_mode(
    model: torch.nn.Module, inner: Iterator[torch.Tensor], fast_linear: bool
) -> Iterator[torch.Tensor]:
    """Drive ``inner`` in eval + inference mode one step at a time, restoring the caller's state in between.

    Each ``next`` puts every submodule in eval mode and enables ``torch.inference_mode`` (and, with
    ``fast_linear``, :class:`llama_ar.kernels.SkinnyLinearMode`); all are undone before the group is handed
    back, so the caller's code between groups runs with its own grad mode, module modes and kernels. One mode
    object serves the whole call, so weights are reordered for oneDNN once, not once per group.
    """
    modes = [(module, module.training) for module in model.modules()]
    kernels = SkinnyLinearMode() if fast_linear else None
    try:
        while True:
            model.eval()
            try:
                with torch.inference_mode(), kernels if kernels is not None else contextlib.nullcontext():
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


def _check_generator(generator: Generators, batch: int, device: torch.device) -> None:
    generators = generator if isinstance(generator, list) else [generator]
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(
            f"got {len(generator)} generators for {batch} class labels: pass one per image, or one."
        )
    for g in generators:
        if g is None:
            continue
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(g).__name__}.")
        if g.device.type != device.type:
            raise ValueError(
                f"generator is on {g.device} but the model is on {device}; create it with "
                f"torch.Generator(device='{device.type}')."
            )
    if isinstance(generator, list) and any(g is None for g in generator):
        raise ValueError("a list of generators must not contain None.")


def iter_code_groups(
    model: torch.nn.Module,
    class_labels: torch.Tensor | Sequence[int] | int,
    num_tokens: int = 256,
    tokens_per_step: int = 32,
    *,
    options: SamplingOptions | None = None,
    generator: Generators = None,
    prefix_codes: torch.Tensor | None = None,
    logits_callback: LogitsCallback | None = None,
    **option_fields: Any,
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
        options: A :class:`SamplingOptions`; ``option_fields`` (``cfg_scale=``, ``top_k=``, … — its field
            names) override its fields, or the defaults when it is None.
        generator: A ``torch.Generator`` on the model's device for ``torch.multinomial``, or a list of B of
            them (row i drawn with generator i, so a row does not depend on the rest of the batch).
        prefix_codes: Optional (P,) or (B, P) int64 codes in ``[0, codebook_size)`` with P < N, forced as the
            first P codes (layout control); they are returned unchanged.
        logits_callback: Optional ``f(k, logits)`` called for every sampled code k with the (B, codebook_size)
            fp32 guided logits before the warpers (read-only; for inspection and tests).

    Yields:
        (B, tokens_per_step) int64 code groups in order, on the model's device; groups fully covered by the
        prefix come right after the prefill.
    """
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "lm_head") or not hasattr(model, "model"):
        raise TypeError(
            f"model must be a LlamaForCausalLM (with .model and .lm_head), got {type(model).__name__}."
        )
    options = SamplingOptions.build(options, **option_fields)
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
    device = model.get_input_embeddings().weight.device
    class_tokens = layout.class_tokens(class_labels, device=device)
    _check_generator(generator, class_tokens.shape[0], device)
    prefix = _prepare_prefix(prefix_codes, layout, class_tokens.shape[0], num_tokens, device)
    inner = _decode(
        model, layout, class_tokens, prefix, num_tokens, tokens_per_step, options, generator, logits_callback
    )
    fast_linear = options.fast_linear
    if fast_linear is None:
        fast_linear = fast_linear_default(device, model.get_input_embeddings().weight.dtype)
    return _run_in_inference_mode(model, inner, fast_linear)


def sample_codes(
    model: torch.nn.Module,
    class_labels: torch.Tensor | Sequence[int] | int,
    num_tokens: int = 256,
    *,
    options: SamplingOptions | None = None,
    generator: Generators = None,
    prefix_codes: torch.Tensor | None = None,
    logits_callback: LogitsCallback | None = None,
    **option_fields: Any,
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
        options=options,
        generator=generator,
        prefix_codes=prefix_codes,
        logits_callback=logits_callback,
        **option_fields,
    )
    return torch.cat(list(groups), dim=1)
