"""Fixtures of the dar tests."""

import pytest
from tiny import make_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_pipe():
    return make_tiny_pipeline()
