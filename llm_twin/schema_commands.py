"""``llm-twin schemas``: the wire contracts as JSON Schema; checks and signatures by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from infra import credentials
from infra.settings import PlatformSettings
from schemas import serde
from schemas.export import topic_schema
from schemas.signing import SIGNATURE_HEADER
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


@app.command()
def sign(
    topic_name: Annotated[str, typer.Argument(metavar="TOPIC")],
    key: Annotated[str, typer.Option("--key", help="The message's key, as it will be sent.")],
    file: Annotated[
        Path | None, typer.Argument(help="The message's value; default: standard input")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="A header NAME=VALUE the message will carry."),
    ] = None,
    tombstone: Annotated[
        bool, typer.Option("--tombstone", help="Sign a tombstone (a null value).")
    ] = False,
) -> None:
    """Print the signature header for one message, for a producer such as kcat.

    The value is signed as it will be sent, less one trailing newline (kcat's
    line-delimited input drops it); pass every header the message will carry.
    """
    try:
        entry = topic(topic_name)
    except KeyError as error:
        typer.echo(str(error.args[0]), err=True)
        raise typer.Exit(2) from None
    headers = []
    for item in header or []:
        name, equals, text = item.partition("=")
        if not equals or not name:
            typer.echo(f"--header wants NAME=VALUE, got {item!r}", err=True)
            raise typer.Exit(2)
        headers.append((name, text.encode("utf-8")))
    try:
        signer = credentials.signer(PlatformSettings())
    except credentials.CredentialsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    if signer is None:
        typer.echo("no signing key: set LLM_TWIN_SIGNING_KEY or run `llm-twin infra up`", err=True)
        raise typer.Exit(1)
    if not entry.signed:
        typer.echo(f"note: {entry.name} is not a signed topic; nobody checks this", err=True)
    value: bytes | None = None
    if not tombstone:
        raw = file.read_bytes() if file is not None else sys.stdin.buffer.read()
        value = raw.removesuffix(b"\n").removesuffix(b"\r")
    typer.echo(f"{SIGNATURE_HEADER}={signer.signature(entry.name, key, value, headers)}")
