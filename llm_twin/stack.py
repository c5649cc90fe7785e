"""What every command that publishes or consumes needs first: a running stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
from pymongo.database import Database

from infra import credentials, kafka, localstack, warehouse
from infra.settings import PlatformSettings
from llm_twin.supervisor import Fatal
from schemas.signing import Signer

NO_STACK = 3


@dataclass(frozen=True)
class Stack:
    brokers: kafka.Brokers
    one_record_per_batch: bool
    mongodb_uri: str
    # Signs what this command publishes on a signed topic and verifies what it consumes.
    signer: Signer | None


def require(settings: PlatformSettings) -> Stack:
    """The broker and warehouse, or exit 3: never a throw-away broker that would lose data."""
    try:
        endpoints = localstack.endpoints(settings)
        signer = credentials.signer(settings)
    except (localstack.StackError, credentials.CredentialsError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    if endpoints.kafka_bootstrap_servers is None or endpoints.mongodb_uri is None:
        typer.echo("no stack: run `llm-twin infra up`", err=True)
        raise typer.Exit(NO_STACK)
    per_batch = settings.kafka_one_record_per_batch
    return Stack(
        kafka.Brokers.of(endpoints.kafka_bootstrap_servers, settings),
        endpoints.kafka_embedded if per_batch is None else per_batch,
        endpoints.mongodb_uri,
        signer,
    )


@contextmanager
def warehouse_db(settings: PlatformSettings, connection: Stack) -> Iterator[Database[Any]]:
    """The warehouse's database, its client closed on the way out."""
    client = warehouse.connect(connection.mongodb_uri)
    try:
        yield client[settings.mongodb_database]
    finally:
        client.close()


def say(text: str) -> None:
    """A line for the person at the terminal (stderr: stdout is for `--json` and drafts)."""
    typer.echo(text, err=True)


@contextmanager
def reported(code: int = 1) -> Iterator[None]:
    """A :class:`Fatal` failure as its one sentence on stderr and exit ``code``, no traceback."""
    try:
        yield
    except Fatal as fatal:
        typer.echo(str(fatal), err=True)
        raise typer.Exit(code) from None
