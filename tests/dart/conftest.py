"""Fixtures for the dart tests: tiny random models with a live head."""

import pytest
import torch
from dart_test_utils import randomise_heads

from dart import DARTModel


@pytest.fixture
def make_model():
    """``make_model(variant="dart", **config_changes)``: a tiny-preset model in eval mode with live heads."""

    def build(variant: str = "dart", **changes) -> DARTModel:
        torch.manual_seed(0)
        return randomise_heads(DARTModel.from_preset("tiny", variant=variant, **changes)).eval()

    return build
