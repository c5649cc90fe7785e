"""What every command that publishes or consumes needs first: a running stack."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from infra import localstack
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
