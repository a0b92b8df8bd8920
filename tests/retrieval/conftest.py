"""Fixtures of the retrieval tests (helpers live in ``retrieval_helpers``)."""

from __future__ import annotations

import pytest
from retrieval_helpers import CountingEmbedder


@pytest.fixture
def counting() -> CountingEmbedder:
    return CountingEmbedder()
