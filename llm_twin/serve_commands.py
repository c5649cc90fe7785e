"""``llm-twin serve`` and ``generate``: the twin speaking.

In the embedded default, ``serve`` owns the Qdrant directory (local mode admits
one process), so it also runs the ingestion dataflow, sharing its store; it
records itself in ``LLM_TWIN_HOME/serve.json`` so that ``generate``, ``search``
and ``status`` go through it instead of opening the store. What runs, and how
each part is kept up, is the composition root's (:mod:`llm_twin.runtime`).
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from infra.ports import is_loopback
from infra.settings import PlatformSettings
from llm_twin import live, runtime, stack

if TYPE_CHECKING:
    from serving.keys import ApiKeys
    from serving.settings import ServingSettings

HostOption = Annotated[str, typer.Option("--host", help="Address to bind.")]
PortOption = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind.")]


def keys(settings: ServingSettings, home: Path, host: str) -> tuple[ApiKeys, str | None]:
    """The configured keys; unset, the local key (loopback only). The local key is returned."""
    from serving.keys import ApiKeys, KeysError

    if settings.api_keys is not None:
        try:
            return ApiKeys.parse(settings.api_keys.get_secret_value()), None
        except KeysError as error:
            raise runtime.Fatal(str(error)) from None
    if not is_loopback(host):
        raise runtime.Fatal(
            f"refusing to serve on {host} with the local key: set LLM_TWIN_API_KEYS "
            "(without it, serve binds to loopback only)"
        )
    try:
        return ApiKeys.local(home)
    except KeysError as error:  # e.g. a key file other users may read
        raise runtime.Fatal(str(error)) from None


def refuse_second_server(home: Path) -> None:
    running = live.live_server(home)
    if running is not None:
        raise runtime.Fatal(f"already serving at {running.url} (pid {running.pid})")


def serve_command(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    ingest: Annotated[
        bool | None,
        typer.Option(
            "--ingest/--no-ingest",
            help="Run the ingestion dataflow in this process (default: with Qdrant local mode).",
        ),
    ] = None,
) -> None:
    """Serve the twins: the retrieval consumer and the HTTP API (plus ingestion, embedded)."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.reported():
        serving = runtime.serving_settings()
        api_keys, local_key = keys(serving, settings.home, host)
        refuse_second_server(settings.home)

        def ready(url: str, service: runtime.Service) -> None:
            stack.say(f"serving on {url}")
            if local_key:
                stack.say(f"local API key: {local_key}")

        # Ctrl-C while loading, before the supervisor takes the signals: stopped.
        with suppress(KeyboardInterrupt):
            runtime.serve(
                settings,
                connection,
                serving,
                api_keys,
                host=host,
                port=port,
                ingest=settings.qdrant_url is None if ingest is None else ingest,
                trainer=False,
                say=stack.say,
                on_url=ready,
            )
    stack.say("stopped")


def generate_command(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The idea to draft.")],
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the event lines.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=2048)] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0)] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", min=0.01, max=1.0)] = 0.95,
    repetition_penalty: Annotated[
        float | None,
        typer.Option("--repetition-penalty", min=1.0, max=2.0, help="Default: the backend's."),
    ] = None,
    no_repeat_ngram_size: Annotated[
        int | None,
        typer.Option("--no-repeat-ngram-size", min=0, max=16, help="Local model only."),
    ] = None,
) -> None:
    """Draft a text in the author's voice, streamed through Kafka to the terminal.

    Against a running `serve`/`up` on this home; with none, a retrieval consumer
    runs in this process for the duration of the command.
    """
    from schemas.generation import DoneEvent, ErrorEvent, TokenEvent

    settings = PlatformSettings()
    connection = stack.require(settings)
    outcome: dict[str, Any] = {}

    async def main(serving: ServingSettings) -> None:
        from serving.replies import open_channel

        async with runtime.consumer_unless_served(settings, connection, serving):
            channel, claim = open_channel(
                connection.brokers,
                settings.home,
                one_record_per_batch=connection.one_record_per_batch,
                partition=serving.reply_partition,
                signer=connection.signer,
            )
            try:
                try:
                    request = channel.new_request(
                        author,
                        prompt,
                        max_new_tokens=max_new_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size,
                        timeout_s=serving.request_timeout_s,
                    )
                except ValidationError as error:
                    outcome["invalid"] = error.errors()[0]["msg"]
                    return
                attempt = 1
                async for event in channel.stream(request):
                    if as_json:
                        typer.echo(event.model_dump_json())
                    elif isinstance(event, TokenEvent):
                        if event.attempt != attempt:
                            attempt = event.attempt
                            stack.say("\n[the worker was lost; starting again]")
                        sys.stdout.write(event.text)
                        sys.stdout.flush()
                    outcome["final"] = event
            finally:
                channel.close()
                if claim is not None:
                    claim.release()

    with stack.reported():
        try:
            asyncio.run(main(runtime.serving_settings()))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if "invalid" in outcome:
        stack.say(f"invalid request: {outcome['invalid']}")
        raise typer.Exit(1)
    final = outcome.get("final")
    if isinstance(final, DoneEvent):
        if not as_json:
            typer.echo("")
            for source in final.sources:
                stack.say(f"  source: {source.title} {source.source_url or ''}")
        return
    if isinstance(final, ErrorEvent) and not as_json:
        stack.say(f"\nerror ({final.code.value}): {final.message}")
    raise typer.Exit(1)
