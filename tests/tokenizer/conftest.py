"""Fixtures of the tokenizer tests."""

import pytest
from tiny import randomize_

from tokenizer import DARTokenizer


@pytest.fixture
def tiny() -> DARTokenizer:
    """The "tiny" preset with randomised zero-init parameters, in eval mode."""
    return randomize_(DARTokenizer.from_preset("tiny")).eval()
