"""Fixtures for the llama_ar tests: a tiny layout and a tiny randomly initialised prior with a live head."""

import pytest
import torch

from llama_ar import VocabLayout, build_ar_model

CODEBOOK_SIZE = 32
NUM_CLASSES = 4


@pytest.fixture
def layout() -> VocabLayout:
    return VocabLayout(CODEBOOK_SIZE, NUM_CLASSES, id2label={i: f"class-{i}" for i in range(NUM_CLASSES)})


@pytest.fixture
def tiny_model(layout):
    """Tiny preset (64-d, 2 layers, 16 codes) with a random (non-zero) head so that logits differ per code."""
    torch.manual_seed(0)
    model = build_ar_model("tiny", layout, num_tokens=16, zero_init_head=False, initializer_range=0.2)
    return model.eval()
