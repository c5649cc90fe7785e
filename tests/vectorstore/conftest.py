"""The real bundled MiniLM, loaded once for every vectorstore test (a few seconds)."""

from __future__ import annotations

import pytest

from vectorstore.embedder import Embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder.load()
