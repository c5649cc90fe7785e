"""``llm-twin up``: the embedded default, everything in one command, until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import shlex
from contextlib import suppress
from pathlib import Path
from typing import Annotated

import typer

from infra import credentials, kafka, localstack
from infra.settings import PlatformSettings
from llm_twin import runtime, stack
from llm_twin.serve_commands import HostOption, PortOption, keys, refuse_second_server
from llm_twin.stack import say

DEMO_AUTHOR = "docs"
DEMO_PROMPT = "Write a short post on how the twin keeps each author's writing to itself."


def up_command(
    sources: Annotated[
        list[str] | None,
        typer.Argument(metavar="[SOURCE]...", help="URLs to crawl and paths to import."),
    ] = None,
    author: Annotated[
        str, typer.Option("--author", help="Whose sources they are (default: docs).")
    ] = DEMO_AUTHOR,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    with_trainer: Annotated[
        bool,
        typer.Option("--with-trainer", help="Also train every snapshot published (LoRA)."),
    ] = False,
) -> None:
    """Everything on this machine: stack, ingestion, the twin's consumer and API, until Ctrl-C.

    With no sources, the project's own docs/ become the twin of author `docs`.
    """
    settings = PlatformSettings()
    with stack.reported():
        serving = runtime.serving_settings()
        api_keys, local_key = keys(serving, settings.home, host)
        refuse_second_server(settings.home)
    started_stack = localstack.load_state(settings) is None or not _stack_answers(settings)
    if started_stack:
        say("starting the broker and warehouse…")
        try:
            localstack.up(settings)
        except (localstack.StackError, credentials.CredentialsError) as error:
            say(f"cannot start the stack: {error}")
            raise typer.Exit(1) from None
    try:
        connection = stack.require(settings)
        _collect(sources or [str(_project_docs())], author)

        async def announce(url: str, service: runtime.Service) -> None:
            say(f"API on {url}; indexing {author}'s documents…")
            await _indexed(connection, service)
            key = local_key or "$LLM_TWIN_API_KEY"
            body = json.dumps({"prompt": DEMO_PROMPT, "max_new_tokens": 160})
            typer.echo(
                f"\nThe twin of {author} is ready at {url}. Stream a draft with:\n\n"
                f"  curl -N -H 'Authorization: Bearer {key}' "
                "-H 'Content-Type: application/json' \\\n"
                f"    -d {shlex.quote(body)} {url}/v1/twins/{author}/generate\n\n"
                "Ctrl-C stops everything."
            )

        # Ctrl-C while loading, before the supervisor takes the signals: stopped.
        with stack.reported(), suppress(KeyboardInterrupt):
            runtime.serve(
                settings,
                connection,
                serving,
                api_keys,
                host=host,
                port=port,
                ingest=settings.qdrant_url is None,
                trainer=with_trainer,
                say=say,
                on_url=announce,
            )
    finally:
        if started_stack:
            say("stopping the broker and warehouse…")
            localstack.down(settings)
    say("stopped")


def _collect(sources: list[str], author: str) -> None:
    from llm_twin.producer_commands import crawl_command, import_command

    for source in sources:
        try:
            if _is_url(source):
                crawl_command([source], author)
            else:
                import_command([Path(source)], author)
        except typer.Exit as failed:
            if failed.exit_code not in (0, None):
                say(f"{source}: some items failed (above); going on")


async def _indexed(connection: stack.Stack, service: runtime.Service) -> None:
    """Until the dataflow has caught up with what was published (or the process stops)."""
    from streams import lag

    stopping = False
    incarnation = await asyncio.to_thread(kafka.cluster_id, connection.brokers)
    try:
        await asyncio.to_thread(
            lag.wait_until_caught_up,
            connection.brokers,
            service.parts.db,
            incarnation,
            still_running=lambda: not stopping,
        )
    finally:
        stopping = True  # the thread sees it within its poll: it never outlives the client


def _stack_answers(settings: PlatformSettings) -> bool:
    endpoints = localstack.endpoints(settings)
    return endpoints.kafka_bootstrap_servers is not None and endpoints.mongodb_uri is not None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "git@", "ssh://"))


def _project_docs() -> Path:
    docs = Path(__file__).resolve().parents[1] / "docs"
    if not docs.is_dir():
        say("no docs/ folder beside this installation: name sources to ingest")
        raise typer.Exit(2)
    return docs
