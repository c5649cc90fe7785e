"""The trainer tests' warehouse: a database of the real one the suite starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymongo.database import Database

from infra import warehouse


@pytest.fixture
def db(mongodb_uri: str) -> Iterator[Database[warehouse.Document]]:
    client = warehouse.connect(mongodb_uri)
    try:
        yield client["trainer_tests"]
    finally:
        client.close()
