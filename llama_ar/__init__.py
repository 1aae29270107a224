"""The D-AR autoregressive prior: a stock Llama over image codes, its vocabulary layout, losses and sampler.

Implements the AR half of D-AR (Gao & Shou 2025, §3.3–§3.4): see :mod:`llama_ar.layout` (token ids),
:mod:`llama_ar.config` (presets), :mod:`llama_ar.model` (``build_ar_model``), :mod:`llama_ar.checkpoint`
(strict ``load_ar_model``), :mod:`llama_ar.training` (``ar_loss``, ``ARLossModule``), :mod:`llama_ar.options`
and :mod:`llama_ar.sampling` (``SamplingOptions``, ``sample_codes`` / ``iter_code_groups``) and
:mod:`llama_ar.official_keys` (the official GPT's weights); serving: :mod:`llama_ar.generation` (stock
``generate()``: generation config, CFG-schedule logits processor), :mod:`llama_ar.gguf` (GGUF export) and
:mod:`llama_ar.llamacpp` (sampling through llama.cpp; needs the ``serve`` extra).

Names are imported on first use, so ``import llama_ar.options`` (the command line's flags) needs no torch.
"""

from importlib import import_module

_EXPORTS = {
    "AR_PRESETS": "llama_ar.config",
    "ARConfig": "llama_ar.config",
    "ARLossModule": "llama_ar.training",
    "ARLossOutput": "llama_ar.training",
    "CFGScheduleLogitsProcessor": "llama_ar.generation",
    "LlamaCppPrior": "llama_ar.llamacpp",
    "build_generation_config": "llama_ar.generation",
    "class_prompt": "llama_ar.generation",
    "export_gguf": "llama_ar.gguf",
    "null_prompt": "llama_ar.generation",
    "write_generation_config": "llama_ar.generation",
    "SamplingOptions": "llama_ar.options",
    "VocabLayout": "llama_ar.layout",
    "ar_loss": "llama_ar.training",
    "build_ar_model": "llama_ar.model",
    "iter_code_groups": "llama_ar.sampling",
    "load_ar_model": "llama_ar.checkpoint",
    "sample_codes": "llama_ar.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llama_ar' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
