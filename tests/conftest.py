"""The real local stack (Tansu broker, SecantusDB warehouse, Qdrant directory), once per session.

Started through the same launcher code as ``llm-twin infra up``, in a home of
its own, and stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra import localstack
from infra.settings import PlatformSettings
from tests.support import EXTERNAL_SETTINGS


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in EXTERNAL_SETTINGS:
            patch.delenv(name, raising=False)
        patch.setenv("LLM_TWIN_HOME", str(tmp_path_factory.mktemp("default-home")))
        yield


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localstack.Endpoints]:
    settings = PlatformSettings(home=tmp_path_factory.mktemp("stack-home"))
    localstack.up(settings)
    try:
        yield localstack.endpoints(settings)
    finally:
        localstack.down(settings)


@pytest.fixture(scope="session")
def bootstrap_servers(stack: localstack.Endpoints) -> str:
    assert stack.kafka_bootstrap_servers is not None
    return stack.kafka_bootstrap_servers


@pytest.fixture(scope="session")
def mongodb_uri(stack: localstack.Endpoints) -> str:
    assert stack.mongodb_uri is not None
    return stack.mongodb_uri
