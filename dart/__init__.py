"""DART (Gu et al. 2025): the Denoising Autoregressive Transformer on the Hugging Face stack.

Public names are imported lazily, so ``import dart`` stays light (no torch / transformers / diffusers import):
:class:`DARTPipeline` (and its :class:`DARTStreamStep`), :class:`DARTModel`, :class:`DARTConfig` with
:data:`DART_PRESETS`, the sampler (:func:`iter_levels`, :func:`sample`, :class:`LevelStep`), the schedule
(:class:`LevelSchedule`) and the sequence helpers (:class:`SequenceLayout`, :func:`patchify`,
:func:`unpatchify`). This package imports none of ``tokenizer``, ``llama_ar`` or ``dar``.
"""

from importlib import import_module

_EXPORTS = {
    "DARTConfig": "dart.config",
    "DART_PRESETS": "dart.config",
    "DARTModel": "dart.model",
    "DARTOutput": "dart.outputs",
    "DARTLosses": "dart.outputs",
    "parameter_count": "dart.model",
    "LevelSchedule": "dart.schedule",
    "SequenceLayout": "dart.sequence",
    "patchify": "dart.sequence",
    "unpatchify": "dart.sequence",
    "LevelStep": "dart.sampling",
    "guidance_scales": "dart.sampling",
    "iter_levels": "dart.sampling",
    "sample": "dart.sampling",
    "DARTLossModule": "dart.training",
    "DARTPipeline": "dart.pipeline",
    "DARTStreamStep": "dart.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dart' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
