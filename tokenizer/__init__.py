"""Sequential diffusion tokenizer of D-AR (Gao & Shou 2025): images ↔ coarse-to-fine discrete codes.

Public names: :class:`DARTokenizer`, :class:`TokenizerConfig`, :data:`TOKENIZER_PRESETS`, :class:`DecodeStep`,
plus the loss record :class:`TokenizerLosses` and its training module :class:`TokenizerLossModule`, the REPA
target wrapper :class:`Dinov2Target` and the sampler choice :class:`Sampler`.
"""

from tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig
from tokenizer.losses import Dinov2Target, TokenizerLosses, TokenizerLossModule, frozen_loss_models
from tokenizer.model import DARTokenizer
from tokenizer.sampler import DecodeStep, Sampler

__all__ = [
    "DARTokenizer",
    "DecodeStep",
    "Dinov2Target",
    "Sampler",
    "TOKENIZER_PRESETS",
    "TokenizerConfig",
    "TokenizerLossModule",
    "TokenizerLosses",
    "frozen_loss_models",
]
