"""Fixtures for the dart tests: tiny random models whose zero-initialised heads are re-randomised.

Helpers are fixtures (not importable modules), so the tests run under pytest's default and importlib import modes.
"""

import pytest
import torch

from dart import DARTModel


def randomise_heads(model: DARTModel, std: float = 0.3) -> DARTModel:
    """Give the zero-initialised output layers random weights, so that outputs depend on the inputs.

    DART / DART-AR: the x̂_0 head gets N(0, std²) weights and bias. DART-FM: the flow head's zero-initialised
    adaLN modulations and output layer get N(0, (std / 3)²) (its other layers keep their default init).
    """
    generator = torch.Generator().manual_seed(1234)
    if model.config.variant == "dart_fm":
        head = model.fm_head
        layers = [*(block.modulation[-1] for block in head.blocks), head.final_modulation[-1], head.output]
        std = std / 3
    else:
        layers = [model.x0_head]
    with torch.no_grad():
        for layer in layers:
            for param in (layer.weight, layer.bias):
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


@pytest.fixture(scope="session")
def make_model():
    """``make_model(variant="dart", **config_changes)``: a tiny-preset model in eval mode with live heads."""

    def build(variant: str = "dart", **changes) -> DARTModel:
        torch.manual_seed(0)
        return randomise_heads(DARTModel.from_preset("tiny", variant=variant, **changes)).eval()

    return build
