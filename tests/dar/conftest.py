"""Fixtures of the dar tests."""

import pytest
from dar_test_utils import make_tiny_pipeline

from dar.pipeline import DARPipeline


@pytest.fixture(scope="module")
def tiny_pipe() -> DARPipeline:
    return make_tiny_pipeline()
