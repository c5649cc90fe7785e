"""Is each of the platform's services answering? (``llm-twin infra status``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from infra.kafka import Brokers
from infra.localstack import Endpoints, kafka_answers, mongodb_answers
from infra.settings import PlatformSettings


@dataclass(frozen=True)
class ServiceHealth:
    address: str | None
    ok: bool
    detail: str


def redact_uri(uri: str) -> str:
    """The URI with any password replaced, fit for printing and logging."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _qdrant_health(settings: PlatformSettings, location: str) -> ServiceHealth:
    if settings.qdrant_url is None:
        path = Path(location)
        if not path.is_dir():
            return ServiceHealth(location, False, "directory missing: run `llm-twin infra up`")
        if not os.access(path, os.W_OK):
            return ServiceHealth(location, False, "directory not writable")
        return ServiceHealth(location, True, "local mode")
    headers = {}
    if settings.qdrant_api_key is not None:
        headers["api-key"] = settings.qdrant_api_key.get_secret_value()
    try:
        response = httpx.get(f"{location.rstrip('/')}/readyz", headers=headers, timeout=2.0)
    except httpx.HTTPError as error:
        return ServiceHealth(location, False, f"unreachable: {type(error).__name__}")
    return ServiceHealth(location, response.is_success, f"HTTP {response.status_code}")


def check(settings: PlatformSettings, endpoints: Endpoints) -> dict[str, ServiceHealth]:
    bootstrap = endpoints.kafka_bootstrap_servers
    uri = endpoints.mongodb_uri
    return {
        "kafka": (
            ServiceHealth(bootstrap, kafka_answers(Brokers.of(bootstrap, settings), 2.0), "")
            if bootstrap
            else ServiceHealth(None, False, "not running: run `llm-twin infra up`")
        ),
        "mongodb": (
            ServiceHealth(redact_uri(uri), mongodb_answers(uri, 2.0), "")
            if uri
            else ServiceHealth(None, False, "not running: run `llm-twin infra up`")
        ),
        "qdrant": _qdrant_health(settings, endpoints.qdrant_location),
    }
