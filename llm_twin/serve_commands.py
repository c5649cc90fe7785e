"""``llm-twin serve``, ``generate`` and ``up``: the twin speaking, and everything in one command.

In the embedded default, ``serve`` owns the Qdrant directory (local mode admits
one process), so it also runs the ingestion dataflow, in a thread sharing its
store; it records itself in ``LLM_TWIN_HOME/serve.json`` so that ``generate``
and ``search`` go through it instead of opening the store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import psutil
import typer
from pydantic import ValidationError

from infra import credentials, localstack, warehouse
from infra.settings import PlatformSettings
from llm_twin import stack

if TYPE_CHECKING:
    from pymongo import MongoClient

    from llm.backend import Backend
    from serving.keys import ApiKeys
    from serving.server import Parts
    from serving.settings import ServingSettings
    from vectorstore.embedder import Embedder
    from vectorstore.store import VectorStore

log = logging.getLogger(__name__)

SERVE_RECORD = "serve.json"
DEMO_AUTHOR = "docs"
# A new member of the consumer group gets its partitions in ~3 s on Tansu (measured here).
CONSUMER_JOIN_TIMEOUT_S = 60.0
DEMO_PROMPT = "Write a short post on how the twin keeps each author's writing to itself."


# -- the record of a live `serve` ---------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    url: str
    pid: int


def live_server(home: Path) -> LiveServer | None:
    """The `serve`/`up` running on this home, if its recorded process still runs."""
    path = home / SERVE_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["create_time"])) > 0.01:
            return None
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    return LiveServer(url=str(record["url"]), pid=int(record["pid"]))


def cli_key(home: Path) -> str | None:
    """The key this CLI sends to a running API: LLM_TWIN_API_KEY, else the local key."""
    configured = _serving_settings().api_key
    if configured is not None:
        return configured.get_secret_value()
    path = home / "api-key"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def search_through(live: LiveServer, author: str, query: str, k: int) -> list[dict[str, Any]]:
    """``search`` answered by the running API (it holds the store)."""
    import httpx

    key = cli_key(PlatformSettings().home)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(
            f"{live.url}/v1/twins/{author}/search",
            params={"q": query, "k": k},
            headers=headers,
            timeout=60,
        )
    except httpx.HTTPError as error:
        typer.echo(f"the running serve at {live.url} did not answer: {error}", err=True)
        raise typer.Exit(1) from None
    if response.status_code != 200:
        detail = response.json().get("detail") if response.content else response.reason_phrase
        typer.echo(f"search through {live.url} failed ({response.status_code}): {detail}", err=True)
        raise typer.Exit(1)
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@contextmanager
def _recorded(home: Path) -> Iterator[Callable[[str], None]]:
    path = home / SERVE_RECORD

    def record(url: str) -> None:
        me = psutil.Process()
        path.write_text(
            json.dumps({"pid": me.pid, "create_time": me.create_time(), "url": url}),
            encoding="utf-8",
        )

    try:
        yield record
    finally:
        live = live_server(home)
        if live is not None and live.pid == os.getpid():
            path.unlink(missing_ok=True)


# -- settings -----------------------------------------------------------------------------------


def _serving_settings() -> ServingSettings:
    from serving.settings import ServingSettings

    try:
        return ServingSettings()
    except ValidationError as error:
        typer.echo(f"bad serving settings: {error.errors()[0]['msg']}", err=True)
        raise typer.Exit(1) from None


def _keys(settings: ServingSettings, home: Path, host: str) -> tuple[ApiKeys, str | None]:
    """The configured keys; unset, the local key (loopback only). The local key is returned."""
    from serving.keys import ApiKeys, KeysError

    if settings.api_keys is not None:
        try:
            return ApiKeys.parse(settings.api_keys.get_secret_value()), None
        except KeysError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
    if not _loopback(host):
        typer.echo(
            f"refusing to serve on {host} with the local key: set LLM_TWIN_API_KEYS "
            "(without it, serve binds to loopback only)",
            err=True,
        )
        raise typer.Exit(1)
    try:
        keys, key = ApiKeys.local(home)
    except KeysError as error:  # e.g. a key file other users may read
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    return keys, key


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the process: store, embedder, backend, optional ingestion, then the API --------------------


def _run_service(
    settings: PlatformSettings,
    connection: stack.Stack,
    serving: ServingSettings,
    keys: ApiKeys,
    *,
    host: str,
    port: int,
    ingest: bool,
    on_ready: Callable[[str, Parts], None],
) -> None:
    from llm_twin.stream_commands import _connections
    from serving.server import serve
    from streams.run import run as run_dataflow
    from streams.settings import IngestSettings
    from vectorstore.embedder import Embedder

    ingest_settings = IngestSettings()
    embedder = Embedder.load(ingest_settings.embedding_model)
    store = _open_store(
        settings,
        embedder,
        busy="another process (an `ingest`) holds the vector store: stop it first; "
        "serve runs the ingestion dataflow itself",
    )
    client = warehouse.connect(connection.mongodb_uri)
    stop = threading.Event()
    dataflow: threading.Thread | None = None
    try:
        typer.echo("loading the model…", err=True)
        backend = load_backend(settings)
        if ingest:
            connections = _connections(settings, connection)

            def ingestion() -> None:
                try:
                    run_dataflow(
                        connections,
                        ingest_settings,
                        home=settings.home,
                        until_idle=False,
                        embedder=embedder,
                        store=store,
                        stop=stop,
                    )
                except Exception:  # reported; the API keeps answering from what is indexed
                    log.exception("the ingestion dataflow stopped")

            dataflow = threading.Thread(target=ingestion, name="llm-twin-ingest", daemon=True)
            dataflow.start()
        parts = _parts(settings, connection, serving, client, store, embedder, backend)
        # `docker compose stop` and service managers send SIGTERM: stop as for Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with _recorded(settings.home) as record:

            def ready(url: str) -> None:
                record(url)
                on_ready(url, parts)

            with suppress(KeyboardInterrupt):
                asyncio.run(serve(parts, keys, host=host, port=port, on_ready=ready))
    finally:
        stop.set()
        if dataflow is not None:
            dataflow.join(timeout=60)
        client.close()
        store.close()


def load_backend(settings: PlatformSettings) -> Backend:
    """The configured model, loaded or reached, or exit 1 saying why."""
    from llm.errors import BackendError
    from llm.models import ModelNotFound
    from llm.select import open_backend
    from llm.settings import LLMSettings

    try:
        return open_backend(LLMSettings(), settings.home)
    except (BackendError, ModelNotFound, ValidationError, ValueError, RuntimeError) as error:
        typer.echo(f"cannot load the model: {error}", err=True)
        raise typer.Exit(1) from None


def _parts(
    settings: PlatformSettings,
    connection: stack.Stack,
    serving: ServingSettings,
    client: MongoClient[warehouse.Document],
    store: VectorStore,
    embedder: Embedder,
    backend: Backend,
) -> Parts:
    from serving.server import Parts

    return Parts(
        bootstrap_servers=connection.brokers,
        one_record_per_batch=connection.one_record_per_batch,
        db=client[settings.mongodb_database],
        store=store,
        embedder=embedder,
        backend=backend,
        home=settings.home,
        settings=serving,
        signer=connection.signer,
    )


def _open_store(settings: PlatformSettings, embedder: Embedder, *, busy: str) -> VectorStore:
    """The vector store, or exit 1 with ``busy`` when another process holds it."""
    from llm_twin.stream_commands import _qdrant_api_key
    from vectorstore.store import StoreBusy, VectorStore

    try:
        return VectorStore.open(
            settings.qdrant_location, _qdrant_api_key(settings), dimensions=embedder.dimensions
        )
    except StoreBusy:
        typer.echo(busy, err=True)
        raise typer.Exit(1) from None


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind.")] = 8000,
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
    serving = _serving_settings()
    keys, local_key = _keys(serving, settings.home, host)
    _refuse_second_server(settings.home)

    def ready(url: str, parts: Parts) -> None:
        typer.echo(f"serving on {url}", err=True)
        if local_key:
            typer.echo(f"local API key: {local_key}", err=True)

    _run_service(
        settings,
        connection,
        serving,
        keys,
        host=host,
        port=port,
        ingest=settings.qdrant_url is None if ingest is None else ingest,
        on_ready=ready,
    )
    typer.echo("stopped", err=True)


def _refuse_second_server(home: Path) -> None:
    live = live_server(home)
    if live is not None:
        typer.echo(f"already serving at {live.url} (pid {live.pid})", err=True)
        raise typer.Exit(1)


# -- generate -----------------------------------------------------------------------------------


def generate_command(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The idea to draft.")],
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the event lines.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=2048)] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0)] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", min=0.01, max=1.0)] = 0.95,
) -> None:
    """Draft a text in the author's voice, streamed through Kafka to the terminal.

    Against a running `serve`/`up` on this home; with none, a retrieval consumer
    runs in this process for the duration of the command.
    """
    from schemas.generation import DoneEvent, ErrorEvent, TokenEvent

    settings = PlatformSettings()
    connection = stack.require(settings)
    serving = _serving_settings()
    outcome: dict[str, Any] = {}

    async def main() -> None:
        from serving.replies import open_channel

        async with _consumer_unless_served(settings, connection, serving):
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
                            typer.echo("\n[the worker was lost; starting again]", err=True)
                        sys.stdout.write(event.text)
                        sys.stdout.flush()
                    outcome["final"] = event
            finally:
                channel.close()
                if claim is not None:
                    claim.release()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if "invalid" in outcome:
        typer.echo(f"invalid request: {outcome['invalid']}", err=True)
        raise typer.Exit(1)
    final = outcome.get("final")
    if isinstance(final, DoneEvent):
        if not as_json:
            typer.echo("")
            for source in final.sources:
                typer.echo(f"  source: {source.title} {source.source_url or ''}", err=True)
        return
    if isinstance(final, ErrorEvent) and not as_json:
        typer.echo(f"\nerror ({final.code.value}): {final.message}", err=True)
    raise typer.Exit(1)


@asynccontextmanager
async def _consumer_unless_served(
    settings: PlatformSettings, connection: stack.Stack, serving: ServingSettings
) -> AsyncIterator[None]:
    """Nothing when a `serve` runs on this home; else a retrieval consumer in this process."""
    if live_server(settings.home) is not None:
        yield
        return
    from serving.server import build_consumer
    from streams.settings import IngestSettings
    from vectorstore.embedder import Embedder

    embedder = Embedder.load(IngestSettings().embedding_model)
    store = _open_store(
        settings,
        embedder,
        busy="a running `ingest` holds the vector store: start `llm-twin serve` instead "
        "(it ingests too), then generate through it",
    )
    client = warehouse.connect(connection.mongodb_uri)
    try:
        backend = load_backend(settings)
        parts = _parts(settings, connection, serving, client, store, embedder, backend)
        consumer, _ = build_consumer(parts)
        await consumer.start()
        try:
            await asyncio.wait_for(consumer.joined.wait(), CONSUMER_JOIN_TIMEOUT_S)
            yield
        finally:
            await consumer.stop()
            await backend.aclose()
    finally:
        client.close()
        store.close()


# -- up -----------------------------------------------------------------------------------------


def up_command(
    sources: Annotated[
        list[str] | None,
        typer.Argument(metavar="[SOURCE]...", help="URLs to crawl and paths to import."),
    ] = None,
    author: Annotated[
        str, typer.Option("--author", help="Whose sources they are (default: docs).")
    ] = DEMO_AUTHOR,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind.")] = 8000,
    with_trainer: Annotated[
        bool,
        typer.Option("--with-trainer", help="Also train every snapshot published (LoRA)."),
    ] = False,
) -> None:
    """Everything on this machine: stack, ingestion, the twin's consumer and API, until Ctrl-C.

    With no sources, the project's own docs/ become the twin of author `docs`.
    """
    from llm_twin.producer_commands import crawl_command, import_command

    settings = PlatformSettings()
    serving = _serving_settings()
    keys, local_key = _keys(serving, settings.home, host)
    _refuse_second_server(settings.home)
    started_stack = localstack.load_state(settings) is None or not _stack_answers(settings)
    if started_stack:
        typer.echo("starting the broker and warehouse…", err=True)
        try:
            localstack.up(settings)
        except (localstack.StackError, credentials.CredentialsError) as error:
            typer.echo(f"cannot start the stack: {error}", err=True)
            raise typer.Exit(1) from None
    stack_cleanup = ExitStack()
    try:
        connection = stack.require(settings)
        chosen = sources or [str(_project_docs())]
        for source in chosen:
            try:
                if _is_url(source):
                    crawl_command([source], author)
                else:
                    import_command([Path(source)], author)
            except typer.Exit as failed:
                if failed.exit_code not in (0, None):
                    typer.echo(f"{source}: some items failed (above); going on", err=True)

        def ready(url: str, parts: Parts) -> None:
            threading.Thread(
                target=_announce_when_indexed,
                args=(url, parts, settings, connection, author, local_key),
                daemon=True,
            ).start()

        if with_trainer:
            stack_cleanup.enter_context(_trainer_thread(settings, connection))
        _run_service(
            settings,
            connection,
            serving,
            keys,
            host=host,
            port=port,
            ingest=settings.qdrant_url is None,
            on_ready=ready,
        )
    finally:
        stack_cleanup.close()
        if started_stack:
            typer.echo("stopping the broker and warehouse…", err=True)
            localstack.down(settings)
    typer.echo("stopped", err=True)


@contextmanager
def _trainer_thread(settings: PlatformSettings, connection: stack.Stack) -> Iterator[None]:
    """The trainer consumer beside everything else, stopped (after its step) on the way out."""
    from llm_twin.trainer_commands import trainer_parts
    from trainer.consumer import run

    client = warehouse.connect(connection.mongodb_uri)
    stop = threading.Event()
    parts = trainer_parts(settings, connection, client[settings.mongodb_database])

    def follow() -> None:
        try:
            run(parts, stop, on_adapter=lambda a: typer.echo(f"adapter {a.adapter_id}", err=True))
        except Exception:  # reported; serving goes on without it
            log.exception("the trainer stopped")

    thread = threading.Thread(target=follow, name="llm-twin-trainer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=600)
        client.close()


def _announce_when_indexed(
    url: str,
    parts: Parts,
    settings: PlatformSettings,
    connection: stack.Stack,
    author: str,
    local_key: str | None,
) -> None:
    from infra import kafka
    from streams import lag

    typer.echo(f"API on {url}; indexing {author}'s documents…", err=True)
    incarnation = kafka.cluster_id(connection.brokers)
    lag.wait_until_caught_up(connection.brokers, parts.db, incarnation, still_running=lambda: True)
    key = local_key or "$LLM_TWIN_API_KEY"
    body = json.dumps({"prompt": DEMO_PROMPT, "max_new_tokens": 160})
    typer.echo(
        f"\nThe twin of {author} is ready at {url}. Stream a draft with:\n\n"
        f"  curl -N -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f"    -d {shlex.quote(body)} {url}/v1/twins/{author}/generate\n\n"
        "Ctrl-C stops everything."
    )


def _stack_answers(settings: PlatformSettings) -> bool:
    endpoints = localstack.endpoints(settings)
    return endpoints.kafka_bootstrap_servers is not None and endpoints.mongodb_uri is not None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "git@", "ssh://"))


def _project_docs() -> Path:
    docs = Path(__file__).resolve().parents[1] / "docs"
    if not docs.is_dir():
        typer.echo("no docs/ folder beside this installation: name sources to ingest", err=True)
        raise typer.Exit(2)
    return docs
