"""Helpers shared by the dar tests: a tiny random-init pipeline whose outputs depend on its inputs."""

import torch

from dar.pipeline import DARPipeline
from llama_ar import VocabLayout, build_ar_model
from tokenizer import DARTokenizer

CLASS_NAMES = {0: "bear", 1: "bird", 2: "cat"}


def randomize_zero_init(module: torch.nn.Module) -> torch.nn.Module:
    """Zero-init gates/outputs make a fresh model's output constant; perturb them so tests can see differences."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.abs().sum() == 0:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    return module


def make_tiny_pipeline() -> DARPipeline:
    torch.manual_seed(0)
    tokenizer = randomize_zero_init(DARTokenizer.from_preset("tiny"))
    layout = VocabLayout(codebook_size=tokenizer.config.codebook_size, num_classes=3, id2label=CLASS_NAMES)
    ar_model = build_ar_model("tiny", layout)
    return DARPipeline(tokenizer=tokenizer.eval(), ar_model=ar_model.eval())
