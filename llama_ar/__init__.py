"""The D-AR autoregressive prior: a stock Llama over image codes, its vocabulary layout, losses and sampler.

Implements the AR half of D-AR (Gao & Shou 2025, §3.3–§3.4): see :mod:`llama_ar.layout` (token ids),
:mod:`llama_ar.config` (presets), :mod:`llama_ar.model` (``build_ar_model``), :mod:`llama_ar.training`
(``ar_loss``), :mod:`llama_ar.sampling` (``sample_codes`` / ``iter_code_groups``), :mod:`llama_ar.generation`
(stock ``generate()``: generation config, CFG-schedule logits processor), :mod:`llama_ar.gguf` (GGUF export)
and :mod:`llama_ar.llamacpp` (sampling through llama.cpp; needs the ``serve`` extra).
"""

from .config import AR_PRESETS, ARConfig, swiglu_hidden_size
from .generation import (
    CFGScheduleLogitsProcessor,
    build_generation_config,
    class_prompt,
    null_prompt,
    write_generation_config,
)
from .gguf import export_gguf
from .layout import CONFIG_KEY, VocabLayout
from .llamacpp import LlamaCppPrior
from .model import build_ar_model
from .sampling import cfg_scales, iter_code_groups, sample_codes
from .training import (
    ARLossOutput,
    ARTrainingBatch,
    ar_loss,
    ar_training_batch,
    drop_class_tokens,
    drop_embeddings,
)

__all__ = [
    "AR_PRESETS",
    "ARConfig",
    "ARLossOutput",
    "ARTrainingBatch",
    "CFGScheduleLogitsProcessor",
    "CONFIG_KEY",
    "LlamaCppPrior",
    "VocabLayout",
    "ar_loss",
    "ar_training_batch",
    "build_ar_model",
    "build_generation_config",
    "cfg_scales",
    "class_prompt",
    "drop_class_tokens",
    "drop_embeddings",
    "export_gguf",
    "iter_code_groups",
    "null_prompt",
    "sample_codes",
    "swiglu_hidden_size",
    "write_generation_config",
]
