"""Sequential diffusion tokenizer of D-AR (Gao & Shou 2025): images ↔ coarse-to-fine discrete codes.

Public names: :class:`DARTokenizer`, :class:`TokenizerConfig`, :data:`TOKENIZER_PRESETS`, :class:`DecodeStep`,
plus the loss record :class:`TokenizerLosses` and its training module :class:`TokenizerLossModule`, the REPA
target wrapper :class:`Dinov2Target`, the sampler choice :class:`Sampler` and :func:`split_codebook` and
:func:`with_noise_scale`, which make new tokenizers from a trained one.
"""

from tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig
from tokenizer.losses import Dinov2Target, TokenizerLosses, TokenizerLossModule, frozen_loss_models
from tokenizer.model import DARTokenizer
from tokenizer.sampler import DecodeStep, Sampler
from tokenizer.variants import split_codebook, with_noise_scale

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
    "split_codebook",
    "with_noise_scale",
]
