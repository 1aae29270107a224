"""Serving the D-AR prior through stock ``transformers`` ``generate()``: its generation config and a CFG processor.

The AR prior is a stock ``LlamaForCausalLM`` (D-AR §3.3), so ``model.generate(class_prompt)`` can sample codes,
provided that the model's ``generation_config.json`` says how (:func:`build_generation_config`):

* ``max_new_tokens`` = the number of codes N (there is no end-of-sequence token);
* ``do_sample=True`` with ``top_k=0`` and ``top_p=1`` unless configured (transformers' global default is
  ``top_k=50``, and greedy decoding when ``do_sample`` is unset);
* ``suppress_tokens`` = every class id and the null id, so that only image codes are ever drawn.

:func:`build_ar_model` attaches this config, so ``save_pretrained`` writes it; :func:`write_generation_config`
(re)writes it for an existing folder.

Classifier-free guidance. ``generate(guidance_scale=s, negative_prompt_ids=null_prompt(...))`` runs transformers'
own constant-scale guidance and reproduces :func:`llama_ar.sample_codes` with a constant schedule. The paper's
linear schedule (1.1 → 8.0 for D-AR-L) and ``cfg_interval`` have no stock equivalent:
:class:`CFGScheduleLogitsProcessor` implements them (and the constant schedule) as a ``LogitsProcessor`` passed
through ``generate(logits_processor=[...])``, with exactly the semantics of :func:`llama_ar.cfg_scales` and of
the sampler's ``cfg_interval`` (code index k is guided iff ``cfg_interval < 0 or k <= cfg_interval``). It runs
the null-class sequence itself, so it replaces ``guidance_scale`` / ``negative_prompt_ids``: transformers adds
its own constant-scale guidance whenever ``guidance_scale`` is set, and the two would guide twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Literal

import torch

from .cache import check_cache_filled, make_cache
from .layout import CONFIG_KEY, VocabLayout

__all__ = [
    "CFGScheduleLogitsProcessor",
    "build_generation_config",
    "class_prompt",
    "null_prompt",
    "write_generation_config",
]

logger = logging.getLogger(__name__)


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int ≥ 0 (0 disables it), got {top_k!r}.")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1] (1 disables it), got {top_p!r}.")


def build_generation_config(
    layout: VocabLayout,
    num_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
):
    """The ``transformers.GenerationConfig`` that makes plain ``generate(class_prompt)`` sample N valid codes.

    Args:
        layout: The model's vocabulary layout.
        num_tokens: Codes per image N (``max_new_tokens``).
        temperature: Softmax temperature > 0.
        top_k: Keep the k most likely codes (0 = off; 1 = greedy).
        top_p: Nucleus threshold in (0, 1] (1 = off).

    Returns:
        A ``GenerationConfig`` with ``max_new_tokens=num_tokens``, ``do_sample=True``, the given temperature /
        top-k / top-p, ``suppress_tokens`` = the class and null ids, and no bos / eos / pad ids. It sets no
        ``guidance_scale``: without ``negative_prompt_ids`` transformers would guide against the class token
        itself (see :func:`null_prompt`).
    """
    from transformers import GenerationConfig

    if not isinstance(layout, VocabLayout):
        raise TypeError(f"layout must be a llama_ar.VocabLayout, got {type(layout).__name__}.")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}.")
    _check_sampling(temperature, top_k, top_p)
    return GenerationConfig(
        max_new_tokens=num_tokens,
        do_sample=True,
        temperature=float(temperature),
        top_k=top_k,
        top_p=float(top_p),
        suppress_tokens=list(range(layout.codebook_size, layout.vocab_size)),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        use_cache=True,
    )


def write_generation_config(
    folder: str | os.PathLike,
    num_tokens: int | None = None,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
):
    """(Re)write ``generation_config.json`` of a saved AR-model folder (e.g. one converted from official weights).

    Args:
        folder: A ``LlamaForCausalLM`` folder whose ``config.json`` carries ``dar_layout``.
        num_tokens: Codes per image; ``None`` uses the model's capacity (``max_position_embeddings − 1``).
        temperature, top_k, top_p: Sampling defaults, as in :func:`build_generation_config`.

    Returns:
        The ``GenerationConfig`` written to ``folder/generation_config.json``.
    """
    path = os.fspath(folder)
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"{config_file} does not exist: pass an AR-model folder written by save_pretrained "
            "(for a pipeline folder, its ar_model/ subfolder)."
        )
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    if CONFIG_KEY not in config:
        raise ValueError(
            f"{config_file} has no '{CONFIG_KEY}' entry: it is not a D-AR prior built by llama_ar.build_ar_model."
        )
    layout = VocabLayout.from_dict(config[CONFIG_KEY])
    capacity = int(config["max_position_embeddings"]) - 1
    if num_tokens is None:
        num_tokens = capacity
    elif isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or not 1 <= num_tokens <= capacity:
        raise ValueError(
            f"num_tokens must be an int in [1, {capacity}] (the model's max_position_embeddings − 1), "
            f"got {num_tokens!r}."
        )
    generation_config = build_generation_config(
        layout, num_tokens, temperature=temperature, top_k=top_k, top_p=top_p
    )
    generation_config.save_pretrained(path)
    logger.info("wrote %s (max_new_tokens=%d)", os.path.join(path, "generation_config.json"), num_tokens)
    return generation_config


def class_prompt(
    layout: VocabLayout,
    class_labels: torch.Tensor | Sequence[int] | int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``generate`` prompt for class labels: (B, 1) int64 class ids (validated like the sampler's)."""
    return layout.class_tokens(class_labels, device=device)[:, None]


def null_prompt(
    layout: VocabLayout, batch_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``negative_prompt_ids`` for stock constant-scale guidance: (B, 1) int64 null-class ids."""
    return layout.null_tokens(batch_size, device=device)[:, None]


class CFGScheduleLogitsProcessor:
    """Classifier-free guidance with D-AR's schedule, for stock ``generate(logits_processor=[...])``.

    It implements the ``transformers.LogitsProcessor`` protocol (``__call__(input_ids, scores) -> scores``,
    which is all that ``LogitsProcessorList`` uses) without subclassing it, so that importing :mod:`llama_ar`
    does not import ``transformers``.

    At the step that samples code k (the conditional sequence is ``[class id, code_0 … code_{k−1}]``, so
    ``k = input_ids.shape[1] − 1``, also when the prompt holds prefix codes) it returns
    ``uncond + s_k · (cond − uncond)`` on the code ids and −inf on the class / null ids, where ``s_k`` is
    ``cfg_scales(num_tokens, cfg_scale, cfg_schedule, cfg_scale_start)[k]`` and ``uncond`` are the code logits
    of the null sequence ``[null id, code_0 … code_{k−1}]`` (the prompt with its class id replaced by the null
    id). Codes with ``k > cfg_interval`` (when ``cfg_interval ≥ 0``) take the conditional logits alone, and the
    null sequence is no longer run. This equals :func:`llama_ar.sample_codes`' mixing; with ``top_k=1`` both
    pick the same codes.

    The processor keeps the null sequence's KV cache between steps. It resets itself when a new ``generate``
    call starts (``input_ids`` that are not one token longer than at the previous call, or of another batch
    size), so one instance can serve successive calls, but not two concurrent ones.

    Do not also pass ``guidance_scale`` to ``generate``: transformers would add its own constant-scale guidance
    in front of this processor and guide twice.

    Args:
        model: The ``LlamaForCausalLM`` that ``generate`` runs (it carries ``config.dar_layout``).
        cfg_scale: Constant scale, or the final scale (at code N − 1) of the linear ramp.
        cfg_schedule: ``"constant"`` or ``"linear"``.
        cfg_scale_start: Scale at code 0 of the linear ramp (paper, D-AR-L: 1.1 → 8.0).
        cfg_interval: −1 (off) or j ≥ 0: codes with index > j are sampled from the conditional logits.
        num_tokens: Codes per image N over which the ramp runs; ``None`` uses the model's
            ``generation_config.max_new_tokens`` when set, else its capacity (``max_position_embeddings − 1``).

    Example::

        codes = model.generate(
            class_prompt(layout, [3, 7]),
            logits_processor=[CFGScheduleLogitsProcessor(model, 8.0, "linear", cfg_scale_start=1.1)],
        )[:, 1:]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg_scale: float,
        cfg_schedule: Literal["constant", "linear"] = "constant",
        cfg_scale_start: float = 1.0,
        cfg_interval: int = -1,
        num_tokens: int | None = None,
    ):
        from .options import cfg_scales

        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(
                f"model must be the LlamaForCausalLM that generate runs, got {type(model).__name__}."
            )
        self.model = model
        self.layout = VocabLayout.from_config(model.config)
        capacity = model.config.max_position_embeddings - 1
        if num_tokens is None:
            configured = getattr(getattr(model, "generation_config", None), "max_new_tokens", None)
            num_tokens = configured if configured is not None else capacity
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or not 1 <= num_tokens <= capacity:
            raise ValueError(f"num_tokens must be an int in [1, {capacity}], got {num_tokens!r}.")
        if isinstance(cfg_interval, bool) or not isinstance(cfg_interval, int) or cfg_interval < -1:
            raise ValueError(f"cfg_interval must be -1 (off) or a code index ≥ 0, got {cfg_interval!r}.")
        self.num_tokens = num_tokens
        self.cfg_interval = cfg_interval
        self.scales = cfg_scales(num_tokens, cfg_scale, cfg_schedule, cfg_scale_start).tolist()
        self.guided = any(scale != 1.0 for scale in self.scales)
        self.reset()

    def reset(self) -> None:
        """Forget the null sequence (done automatically when a new ``generate`` call starts)."""
        self._cache = None
        self._length = 0  # tokens of the null sequence held by the cache
        self._seen = (0, 0)  # (batch, length) of the input_ids of the previous call

    def _guides(self, k: int) -> bool:
        return self.guided and (self.cfg_interval < 0 or k <= self.cfg_interval)

    def _null_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, K) fp32 code logits of the null sequence after ``input_ids[:, 1:]``."""
        batch, length = input_ids.shape
        if self._cache is None:  # prefill: [null, prompt codes …]
            ids = input_ids.clone()
            ids[:, 0] = self.layout.null_token
            self._cache = make_cache("dynamic", self.model.config, self.num_tokens + 1)
            start = 0
        else:  # one new token per step
            ids = input_ids[:, self._length :]
            start = self._length
        positions = torch.arange(start, length, device=input_ids.device)[None]  # (1, L − start)
        out = self.model(
            input_ids=ids, position_ids=positions, cache=self._cache, use_cache=True, logits_to_keep=1
        )
        if start == 0:
            check_cache_filled(self._cache, length)
        self._length = length
        return out.logits[:, -1, : self.layout.codebook_size].float()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Guide the next-code scores.

        Args:
            input_ids: (B, k + 1) int64 conditional sequences ``[class id, code_0 … code_{k−1}]``.
            scores: (B, vocab_size) float next-token scores of the conditional sequences.

        Returns:
            (B, vocab_size) float scores: guided code logits, −inf at the class / null ids.
        """
        batch, length = input_ids.shape
        num_codes = self.layout.codebook_size
        if scores.shape[-1] != self.layout.vocab_size:
            raise ValueError(
                f"scores have {scores.shape[-1]} entries, expected vocab_size={self.layout.vocab_size}."
            )
        k = length - 1
        if k >= self.num_tokens:
            raise ValueError(
                f"generate asks for code {k} but this processor was built for num_tokens={self.num_tokens}; "
                "pass max_new_tokens ≤ num_tokens − (prompt codes) or build it with a larger num_tokens."
            )
        if (batch, length) != (self._seen[0], self._seen[1] + 1):
            self.reset()  # not the next step of the previous call: a new generate call
        self._seen = (batch, length)
        cond = scores[:, :num_codes].float()
        if self._guides(k):
            with torch.no_grad():
                uncond = self._null_logits(input_ids)
            cond = uncond + self.scales[k] * (cond - uncond)
        out = torch.full_like(scores, float("-inf"))
        out[:, :num_codes] = cond.to(scores.dtype)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(scales {self.scales[0]:g} → {self.scales[-1]:g} over {self.num_tokens} codes, "
            f"cfg_interval={self.cfg_interval})"
        )
