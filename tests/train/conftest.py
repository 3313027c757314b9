"""Fixtures for trainer tests."""

from __future__ import annotations

import pytest
from train_helpers import make_examples

from textcl.types import Example


@pytest.fixture
def examples() -> list[Example]:
    return make_examples(24)
