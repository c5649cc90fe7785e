"""``llm-twin infra up | down | status``: the embedded broker, warehouse and vector store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra import credentials, health, localstack
from infra.settings import PlatformSettings

app = typer.Typer(
    help="Start, stop and show the embedded broker and warehouse.", no_args_is_help=True
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _status_object(settings: PlatformSettings) -> dict[str, dict[str, object]]:
    endpoints = localstack.endpoints(settings)
    services = health.check(settings, endpoints)
    return {
        "kafka": {
            "bootstrap_servers": services["kafka"].address or "",
            "ok": services["kafka"].ok,
            "embedded": settings.kafka_bootstrap_servers is None,
            "incarnation_id": endpoints.incarnation_id,
        },
        "mongodb": {
            "uri": services["mongodb"].address or "",
            "ok": services["mongodb"].ok,
            "embedded": settings.mongodb_uri is None,
        },
        "qdrant": {
            "location": services["qdrant"].address or "",
            "ok": services["qdrant"].ok,
            "embedded": settings.qdrant_url is None,
        },
    }


def _print_table(status: dict[str, dict[str, object]]) -> None:
    table = Table(title="LLM Twin stack")
    table.add_column("service")
    table.add_column("address")
    table.add_column("where")
    table.add_column("state")
    for name, key in (("kafka", "bootstrap_servers"), ("mongodb", "uri"), ("qdrant", "location")):
        service = status[name]
        table.add_row(
            name,
            str(service[key]) or "-",
            "embedded" if service["embedded"] else "external",
            "[green]ok[/green]" if service["ok"] else "[red]down[/red]",
        )
    Console().print(table)


@app.command()
def up(as_json: JsonFlag = False) -> None:
    """Start the embedded broker and warehouse (idempotent) and create every topic."""
    settings = PlatformSettings()
    try:
        _, started = localstack.up(settings)
        status = _status_object(settings)
    except (localstack.StackError, credentials.CredentialsError) as error:
        typer.echo(f"infra up failed: {error}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(status | {"started": started}))
        return
    typer.echo(f"started: {', '.join(started)}" if started else "already running")
    _print_table(status)


@app.command()
def down() -> None:
    """Stop what `infra up` started; with nothing running, do nothing."""
    settings = PlatformSettings()
    stopped = localstack.down(settings)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(as_json: JsonFlag = False) -> None:
    """Show where each service is and whether it answers (exit 0 either way)."""
    try:
        status = _status_object(PlatformSettings())
    except (localstack.StackError, credentials.CredentialsError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(status))
    else:
        _print_table(status)
