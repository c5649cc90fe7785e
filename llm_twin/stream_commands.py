"""``llm-twin ingest``, ``search``, ``status``, ``dead-letters``: the pipeline and what it built."""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import KafkaError, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra import kafka, warehouse
from infra.settings import PlatformSettings
from llm_twin import live, runtime, stack
from schemas import serde
from schemas.dead_letters import DeadLetter
from schemas.topics import DEAD_LETTERS, RAW_DOCUMENTS
from streams import lag

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def ingest_command(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop once every partition is caught up.")
    ] = False,
) -> None:
    """Run the feature dataflow: raw documents -> clean -> chunk -> embed -> Qdrant + warehouse.

    With a live dataflow already running on this home (a continuous `ingest`,
    `serve` or `up` holding the vector store), `--until-idle` waits until that
    dataflow has caught up instead.
    """
    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.reported(), suppress(KeyboardInterrupt):
        if until_idle:
            runtime.ingest_until_idle(settings, connection, say=stack.say)
            return
        runtime.ingest(settings, connection, say=stack.say)  # returns once stopped
    # Ctrl-C or SIGTERM: the last snapshot stands; the next run resumes from it.
    stack.say("ingest stopped")
    raise typer.Exit(130)


def search_command(
    query: Annotated[str, typer.Argument(metavar="QUERY")],
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many results.")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """Search the author's own chunks (and nobody else's)."""
    settings = PlatformSettings()
    with stack.reported():
        running = live.live_server(settings.home)
        if running is not None:  # the running serve owns the store: ask it
            results = _search_through(running, author, query, k)
        else:
            from serving.retrieval import Retriever
            from serving.server import search_results

            embedder = runtime.load_embedder(runtime.ingest_settings())
            with runtime.open_store(settings, embedder, busy="") as store:
                try:
                    results = search_results(Retriever(store, embedder, k=k), author, query, k)
                except ValueError as error:
                    raise runtime.Fatal(str(error)) from None
    if as_json:
        typer.echo(json.dumps({"results": results}, ensure_ascii=False))
        return
    console = Console()
    for number, result in enumerate(results, 1):
        console.print(f"[bold]{number}. {result['title']}[/bold]  ({result['score']:.3f})")
        if result["source_url"]:
            console.print(f"   {result['source_url']}")
        preview = " ".join(str(result["text"]).split())
        console.print(f"   {preview[:300]}{'…' if len(preview) > 300 else ''}\n")
    if not results:
        console.print(f"no results for {author}")


def _search_through(running: live.LiveServer, author: str, query: str, k: int) -> Any:
    configured = runtime.serving_settings().api_key
    secret = configured.get_secret_value() if configured is not None else None
    key = live.cli_key(PlatformSettings().home, secret)
    try:
        return live.search(running, key, author, query, k)
    except live.LiveError as error:
        raise runtime.Fatal(str(error)) from None


def _parts(home: Path) -> dict[str, Any] | None:
    """The live server's parts and their states, or None with no live server here."""
    running = live.live_server(home)
    if running is None:
        return None
    try:
        return live.readiness(running)
    except live.LiveError as error:
        return {"ready": False, "error": str(error), "parts": {}}


def status_command(as_json: JsonFlag = False) -> None:
    """Authors, documents and chunks indexed, lag per partition, dead letters."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    bootstrap = connection.brokers
    with stack.warehouse_db(settings, connection) as db:
        authors = {
            row["_id"]: {"documents": row["documents"], "chunks": row["chunks"]}
            for row in db[warehouse.CLEANED_DOCUMENTS].aggregate(
                [
                    {
                        "$group": {
                            "_id": "$author",
                            "documents": {"$sum": 1},
                            "chunks": {"$sum": "$chunk_count"},
                        }
                    },
                    {"$sort": {"_id": 1}},
                ]
            )
        }
        behind = lag.ingest_lag(bootstrap, db, kafka.cluster_id(bootstrap))
    letters = lag.watermarks(bootstrap, DEAD_LETTERS)
    status = {
        "authors": authors,
        "lag": {RAW_DOCUMENTS.name: {str(p): n for p, n in behind.items()}},
        "dead_letters": sum(high - low for low, high in letters.values()),
    }
    served = _parts(settings.home)
    if served is not None:
        status["server"] = served
    if as_json:
        typer.echo(json.dumps(status))
        return
    table = Table(title="Twins")
    for column in ("author", "documents", "chunks"):
        table.add_column(column)
    for slug, counts in authors.items():
        table.add_row(slug, str(counts["documents"]), str(counts["chunks"]))
    console = Console()
    console.print(table)
    console.print(f"lag {RAW_DOCUMENTS.name}: {behind}; dead letters: {status['dead_letters']}")
    if served is not None:
        _print_parts(console, served)


def _print_parts(console: Console, served: dict[str, Any]) -> None:
    # What the server says is shown as text: a reason holding "[/x]" is not markup.
    if "error" in served:
        console.print(escape(f"server: {served['error']}"))
        return
    table = Table(title="Server " + ("ready" if served.get("ready") else "NOT ready"))
    for column in ("part", "state", "restarts", "reason"):
        table.add_column(column)
    for name, part in served.get("parts", {}).items():
        cells = (name, part.get("state"), part.get("restarts", 0), part.get("reason") or "")
        table.add_row(*(escape(str(cell)) for cell in cells))
    console.print(table)


def read_dead_letters(bootstrap: kafka.Brokers | str) -> list[tuple[int, int, Any]]:
    """Every dead letter on the topic, with its own partition and offset."""
    ends = lag.watermarks(bootstrap, DEAD_LETTERS)
    consumer = kafka.make_consumer(bootstrap, "llm-twin-dead-letters", latency_sensitive=True)
    waiting = {p for p, (low, high) in ends.items() if high > low}
    consumer.assign([TopicPartition(DEAD_LETTERS.name, p, ends[p][0]) for p in waiting])
    letters: list[tuple[int, int, Any]] = []
    try:
        while waiting:
            message = consumer.poll(5)
            if message is None:
                break  # the watermarks promised more than arrived: show what did
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(str(error))
            partition, offset = message.partition() or 0, message.offset() or 0
            try:
                letters.append((partition, offset, serde.decode(DEAD_LETTERS, message.value())))
            except serde.DecodeError as unreadable:
                letters.append((partition, offset, unreadable.reason))
            if offset + 1 >= ends[partition][1]:
                waiting.discard(partition)
    finally:
        consumer.close()
    return letters


def dead_letters_command(as_json: JsonFlag = False) -> None:
    """What was rejected, where, at which stage, and why."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    rows: list[dict[str, Any]] = []
    for _, _, letter in read_dead_letters(connection.brokers):
        if not isinstance(letter, DeadLetter):
            rows.append({"stage": "unreadable", "reason": str(letter)})
            continue
        rows.append(
            {
                "stage": letter.stage,
                "reason": letter.reason,
                "topic": letter.source_topic,
                "partition": letter.source_partition,
                "offset": letter.source_offset,
                "key": letter.key,
                "size": letter.size,
                "sha256": letter.sha256,
                "rejected_at": letter.rejected_at.isoformat(),
            }
        )
    if as_json:
        typer.echo(json.dumps({"dead_letters": rows}))
        return
    table = Table(title="Dead letters")
    for column in ("where", "stage", "reason", "size"):
        table.add_column(column)
    for row in rows:
        where = f"{row.get('topic')}[{row.get('partition')}]@{row.get('offset')}"
        table.add_row(where, str(row["stage"]), str(row["reason"]), str(row.get("size", "")))
    Console().print(table)


def reindex_command(
    author: Annotated[
        str | None, typer.Option("--author", help="One author's twin; default: every author.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rebuild collections from the warehouse (a new embedding model); swap each in when done."""
    from streams.reindex import Reindexer, authors_to_rebuild
    from streams.run import EmbedderTokens, check_chunk_size

    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.reported():
        ingest = runtime.ingest_settings()
        embedder = runtime.load_embedder(ingest)
        try:
            check_chunk_size(ingest, embedder)
        except ValueError as error:
            raise runtime.Fatal(str(error)) from None
        store = runtime.open_store(settings, embedder, busy="")
    with store, stack.warehouse_db(settings, connection) as db:
        authors = authors_to_rebuild(db, store, author)
        if not authors:
            whose = f" of {author}" if author else ""
            typer.echo(f"nothing to reindex: no documents{whose} in the warehouse", err=True)
            raise typer.Exit(2)
        reindexer = Reindexer(
            db,
            store,
            embedder,
            EmbedderTokens(embedder),
            ingest.limits(),
            ingest.embed_batch_size,
        )
        console = Console(stderr=True)
        rebuilt = []
        for slug in authors:
            with console.status(f"reindexing {slug}"):
                done = reindexer.rebuild(slug)
            console.print(
                f"{slug}: {done.documents} documents, {done.chunks} chunks "
                f"({done.skipped} skipped) in {done.seconds:.1f} s"
            )
            rebuilt.append(done)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "embedding_model": embedder.model_name,
                    "authors": {
                        r.author: {
                            "documents": r.documents,
                            "chunks": r.chunks,
                            "skipped": r.skipped,
                        }
                        for r in rebuilt
                    },
                }
            )
        )
