"""Tiny random models and images shared by the tests (importable as ``tiny``: ``pythonpath = tests``).

At initialisation every gated block, every adaLN modulation, the decoder's output layer and the AR head are
zero, so most causality and equivalence checks would pass trivially; :func:`randomize_` makes them non-trivial.
"""

import torch

CLASS_NAMES = {0: "bear", 1: "bird", 2: "cat"}


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Give every all-zero parameter random normal(0, std) values, in place (one seeded generator); returns it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


def random_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, size, size) float images in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def make_tiny_pipeline():
    """A DARPipeline of the "tiny" tokenizer and AR presets, 3 named classes, outputs that depend on the inputs."""
    from dar.pipeline import DARPipeline
    from llama_ar import VocabLayout, build_ar_model
    from tokenizer import DARTokenizer

    torch.manual_seed(0)
    tokenizer = randomize_(DARTokenizer.from_preset("tiny"), std=0.02)
    layout = VocabLayout(codebook_size=tokenizer.config.codebook_size, num_classes=3, id2label=CLASS_NAMES)
    ar_model = build_ar_model("tiny", layout)
    return DARPipeline(tokenizer=tokenizer.eval(), ar_model=ar_model.eval())
