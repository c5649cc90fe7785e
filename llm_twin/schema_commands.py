"""``llm-twin schemas``: the wire contracts as JSON Schema; a check for hand-written messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from schemas import serde
from schemas.export import topic_schema
from schemas.topics import REGISTRY, topic

app = typer.Typer(help="The messages on every topic.", no_args_is_help=True)


@app.command()
def export(directory: Path) -> None:
    """Write one JSON Schema per topic into DIRECTORY."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in REGISTRY.values():
        path = directory / f"{entry.name}.schema.json"
        path.write_text(json.dumps(topic_schema(entry), indent=2) + "\n")
        typer.echo(str(path))


@app.command()
def check(
    topic_name: Annotated[str, typer.Argument(metavar="TOPIC")],
    file: Annotated[Path | None, typer.Argument(help="A message; default: standard input")] = None,
) -> None:
    """Decode one message for TOPIC as a consumer would; exit 1 with the reason if it is invalid."""
    try:
        entry = topic(topic_name)
    except KeyError as error:
        typer.echo(str(error.args[0]), err=True)
        raise typer.Exit(2) from None
    value = file.read_bytes() if file is not None else sys.stdin.buffer.read()
    try:
        message = serde.decode(entry, value.rstrip(b"\r\n"))
    except serde.DecodeError as error:
        typer.echo(f"invalid: {error.reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"valid {type(message).__name__}")
