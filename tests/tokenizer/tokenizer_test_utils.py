"""Helpers of the tokenizer tests: randomising zero-initialised parameters, random images.

At initialisation every gated block, every adaLN modulation and the decoder's output layer are zero, so most
causality and equivalence checks would pass trivially; ``randomize_`` makes them non-trivial.
"""

import torch

ZERO_INIT_NAMES = ("gate1", "gate2", "adaLN_modulation", "conv_out")


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Give every zero-initialised parameter random values, in place; returns the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ZERO_INIT_NAMES):
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


def random_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, size, size) float images in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
