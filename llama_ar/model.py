"""Building the D-AR prior as a stock ``transformers.LlamaForCausalLM`` (D-AR §3.3, "vanilla Llama").

No subclass and no custom code: the saved folder loads with ``AutoModelForCausalLM.from_pretrained`` alone,
the vocabulary layout travels in ``config.dar_layout`` (see :mod:`llama_ar.layout`) and the generation config
that makes plain ``generate(class_prompt)`` sample valid codes in ``generation_config.json`` (see
:mod:`llama_ar.generation`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .config import AR_PRESETS, ARConfig
from .generation import build_generation_config
from .layout import VocabLayout

__all__ = ["build_ar_model"]

logger = logging.getLogger(__name__)


def build_ar_model(preset_or_config: str | ARConfig, layout: VocabLayout, **overrides: Any):
    """Build a randomly initialised AR prior.

    Args:
        preset_or_config: A key of :data:`llama_ar.AR_PRESETS` (``"dar-b"``, ``"dar-l"``, ``"dar-xl"``,
            ``"dar-xxl"``, ``"tiny"``, ``"demo"``) or an :class:`ARConfig`.
        layout: The vocabulary layout (codebook size, number of classes); stored in ``model.config``.
        **overrides: :class:`ARConfig` fields to change (e.g. ``num_layers=2``). The keyword
            ``llama_kwargs`` (a dict) is passed on to ``LlamaConfig`` (e.g. ``{"attn_implementation": "eager"}``).

    Returns:
        A ``LlamaForCausalLM`` in fp32 on the current default device, in training mode, with the official
        init: normal(0, ``initializer_range``) linear and embedding weights, RMSNorm weights 1 and, when
        ``zero_init_head``, a zero output head. Build on the meta device with ``with torch.device("meta"):``.
        Its ``generation_config`` (written by ``save_pretrained``) samples ``num_tokens`` codes with plain
        ``generate`` (:func:`llama_ar.build_generation_config`).
    """
    from transformers import LlamaForCausalLM

    llama_kwargs = dict(overrides.pop("llama_kwargs", None) or {})
    if isinstance(preset_or_config, str):
        config = ARConfig.from_preset(preset_or_config, **overrides)
    elif isinstance(preset_or_config, ARConfig):
        config = preset_or_config.replace(**overrides) if overrides else preset_or_config
    else:
        raise TypeError(
            f"preset_or_config must be a preset name ({sorted(AR_PRESETS)}) or an ARConfig, "
            f"got {type(preset_or_config).__name__}."
        )
    model = LlamaForCausalLM(config.to_llama_config(layout, **llama_kwargs))
    if config.zero_init_head:
        with torch.no_grad():
            model.lm_head.weight.zero_()
    model.generation_config = build_generation_config(layout, config.num_tokens)
    logger.debug("built AR prior with %d parameters", sum(p.numel() for p in model.parameters()))
    return model
