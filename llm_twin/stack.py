"""What every command that publishes or consumes needs first: a running stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
from pymongo.database import Database

from infra import localstack, warehouse
from infra.settings import PlatformSettings

NO_STACK = 3


@dataclass(frozen=True)
class Stack:
    bootstrap_servers: str
    one_record_per_batch: bool
    mongodb_uri: str


def require(settings: PlatformSettings) -> Stack:
    """The broker and warehouse, or exit 3: never a throw-away broker that would lose data."""
    endpoints = localstack.endpoints(settings)
    if endpoints.kafka_bootstrap_servers is None or endpoints.mongodb_uri is None:
        typer.echo("no stack: run `llm-twin infra up`", err=True)
        raise typer.Exit(NO_STACK)
    per_batch = settings.kafka_one_record_per_batch
    return Stack(
        endpoints.kafka_bootstrap_servers,
        endpoints.kafka_embedded if per_batch is None else per_batch,
        endpoints.mongodb_uri,
    )


@contextmanager
def warehouse_db(settings: PlatformSettings, connection: Stack) -> Iterator[Database[Any]]:
    """The warehouse's database, its client closed on the way out."""
    client = warehouse.connect(connection.mongodb_uri)
    try:
        yield client[settings.mongodb_database]
    finally:
        client.close()
