"""New tokenizers made from a trained one.

- :func:`split_codebook` grows the codebook by splitting its codes (Linde–Buzo–Gray splitting): used by
  ``recipes/train_tokenizer.py`` (``model.split_codebook``) to give a trained code channel more capacity without
  starting over; the encoder, condition network and decoder keep their weights, and EMA training then moves
  the copies of each code apart.
- :func:`with_noise_scale` sets the decoder's default starting-noise scale (``config.noise_scale``), e.g. for a
  pipeline export (``recipes/train_llama_ar.py``, ``model.noise_scale``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from tokenizer.config import check_noise_scale
from tokenizer.model import DARTokenizer

__all__ = ["split_codebook", "with_noise_scale"]


@torch.no_grad()
def split_codebook(
    tokenizer: DARTokenizer, factor: int, *, spread: float = 0.01, generator: torch.Generator | None = None
) -> DARTokenizer:
    """A copy of ``tokenizer`` with ``factor`` × ``codebook_size`` codes, made by splitting every code (LBG splitting).

    Codes 0…K−1 stay as they are; code ``i + j·K`` (j = 1…factor−1) is code i moved by ``spread`` times a
    random direction and re-normalised. Every copy gets 1/factor of the EMA cluster size, so EMA training
    pulls the copies of a code apart towards the parts of its cluster nearest to each. With ``spread`` 0 the
    copy encodes and decodes exactly as this tokenizer (ties go to the lowest index). Everything else,
    training state included, is copied.

    Args:
        tokenizer: a trained :class:`DARTokenizer` (its codebook initialised).
        factor: how many codes each code becomes (an int >= 2).
        spread: norm of the perturbation of the copies (>= 0; the codes are unit vectors).
        generator: random generator for the perturbation directions.

    Returns:
        A new tokenizer, in the same train/eval mode, on the same device and dtype.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an int >= 2, got {factor!r}")
    if not isinstance(spread, (int, float)) or not spread >= 0:
        raise ValueError(f"spread must be a number >= 0, got {spread!r}")
    if not tokenizer.quantizer.is_initialised:
        raise RuntimeError("the codebook is not initialised yet (kmeans_init=True): train a step first")
    size = tokenizer.config.codebook_size
    split = type(tokenizer)(**tokenizer.config.replace(codebook_size=size * factor).to_dict())
    state = tokenizer.state_dict()
    prefix = "quantizer.vq._codebook."
    embed, cluster = state[prefix + "embed"], state[prefix + "cluster_size"]  # (1, K, d), (1, K)
    moves = randn_tensor((1, size * (factor - 1), embed.shape[-1]), generator=generator, dtype=torch.float32)
    moves = F.normalize(moves, dim=-1).to(device=embed.device, dtype=embed.dtype) * spread
    copies = embed.repeat(1, factor - 1, 1)
    if spread > 0:  # spread 0: exact copies, so that ties (and so the codes) resolve to the originals
        copies = F.normalize(copies + moves, dim=-1)
    new_embed = torch.cat([embed, copies], dim=1)
    new_cluster = cluster.repeat(1, factor) / factor
    state[prefix + "embed"] = new_embed
    state[prefix + "cluster_size"] = new_cluster
    state[prefix + "embed_avg"] = new_embed * new_cluster[..., None]  # averages to the codebook
    return _rebuilt(tokenizer, split, state)


def with_noise_scale(tokenizer: DARTokenizer, noise_scale: float) -> DARTokenizer:
    """A copy of ``tokenizer`` whose decoder draws its starting noise with std ``noise_scale`` by default.

    Weights, device, dtype and train/eval mode are those of ``tokenizer``; only ``config.noise_scale`` changes
    (saved with ``save_pretrained``). Pass ``noise_scale=`` to ``initial_noise`` or the pipeline for one call.
    """
    noise_scale = check_noise_scale(noise_scale)
    copy = type(tokenizer)(**tokenizer.config.replace(noise_scale=noise_scale).to_dict())
    return _rebuilt(tokenizer, copy, tokenizer.state_dict())


def _rebuilt(source: DARTokenizer, target: DARTokenizer, state: dict) -> DARTokenizer:
    """``target`` on ``source``'s device and dtype, with ``state`` loaded strictly and ``source``'s mode."""
    target = target.to(source.device)
    if target.dtype != source.dtype:  # only when needed: diffusers warns on a dtype cast
        target = target.to(source.dtype)
    target.load_state_dict(state, strict=True)
    return target.train(source.training)
