"""``llm-twin ingest``, ``search``, ``status``, ``dead-letters``: the pipeline and what it built."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from confluent_kafka import KafkaError, TopicPartition
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from infra import kafka, warehouse
from infra.settings import PlatformSettings
from llm_twin import serve_commands, stack
from schemas import serde
from schemas.dead_letters import DeadLetter
from schemas.topics import DEAD_LETTERS, RAW_DOCUMENTS
from streams import lag
from streams.settings import IngestSettings

if TYPE_CHECKING:
    from streams.run import Connections

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _qdrant_api_key(settings: PlatformSettings) -> str | None:
    return settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None


def _connections(settings: PlatformSettings, connection: stack.Stack) -> Connections:
    from streams.run import Connections

    return Connections(
        bootstrap_servers=connection.brokers,
        mongodb_uri=connection.mongodb_uri,
        mongodb_database=settings.mongodb_database,
        qdrant_location=settings.qdrant_location,
        qdrant_api_key=_qdrant_api_key(settings),
        incarnation_id=kafka.cluster_id(connection.brokers),
        one_record_per_batch=connection.one_record_per_batch,
        signer=connection.signer,
    )


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
    from streams.run import run  # torch, transformers, bytewax: seconds to import
    from vectorstore.store import StoreBusy, in_use_elsewhere

    settings = PlatformSettings()
    connection = stack.require(settings)
    connections = _connections(settings, connection)
    ingest = _ingest_settings()
    # `docker compose stop` and service managers send SIGTERM: stop as for Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            try:
                run(connections, ingest, home=settings.home, until_idle=until_idle)
                return
            except StoreBusy as busy:
                if not until_idle:
                    typer.echo(str(busy), err=True)
                    raise typer.Exit(1) from None
            typer.echo(
                "a running dataflow owns the vector store: waiting for it to catch up", err=True
            )
            with stack.warehouse_db(settings, connection) as db:
                if lag.wait_until_caught_up(
                    connections.bootstrap_servers,
                    db,
                    connections.incarnation_id,
                    still_running=lambda: in_use_elsewhere(connections.qdrant_location),
                ):
                    return
            typer.echo("that dataflow stopped: running this one", err=True)
    except KeyboardInterrupt:
        # Ctrl-C: the last snapshot stands; the next run resumes from it.
        typer.echo("ingest stopped", err=True)
        raise typer.Exit(130) from None
    except ValueError as error:  # settings that cannot work with this model or store
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


def _ingest_settings() -> IngestSettings:
    try:
        return IngestSettings()
    except ValidationError as error:
        reasons = "; ".join(str(e["msg"]) for e in error.errors())
        typer.echo(f"bad ingest settings: {reasons}", err=True)
        raise typer.Exit(1) from None


def search_command(
    query: Annotated[str, typer.Argument(metavar="QUERY")],
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many results.")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """Search the author's own chunks (and nobody else's)."""
    from vectorstore.embedder import Embedder  # torch and transformers: seconds to import
    from vectorstore.store import StoreBusy, VectorStore

    settings = PlatformSettings()
    live = serve_commands.live_server(settings.home)
    if live is not None:  # the running serve owns the store: ask it
        results = serve_commands.search_through(live, author, query, k)
    else:
        ingest = _ingest_settings()
        embedder = Embedder.load(ingest.embedding_model)
        try:
            with VectorStore.open(
                settings.qdrant_location, _qdrant_api_key(settings), dimensions=embedder.dimensions
            ) as store:
                hits = store.search(author, embedder.encode_query(query), k)
        except (ValueError, StoreBusy) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
        results = [
            {
                "score": hit.score,
                "document_id": hit.payload.get("document_id"),
                "title": hit.payload.get("title"),
                "source_url": hit.payload.get("source_url"),
                "text": hit.payload.get("text"),
            }
            for hit in hits
        ]
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
    from vectorstore.embedder import Embedder
    from vectorstore.store import StoreBusy, VectorStore

    settings = PlatformSettings()
    connection = stack.require(settings)
    ingest = _ingest_settings()
    embedder = Embedder.load(ingest.embedding_model)
    try:
        check_chunk_size(ingest, embedder)
        store = VectorStore.open(
            settings.qdrant_location, _qdrant_api_key(settings), dimensions=embedder.dimensions
        )
    except (ValueError, StoreBusy) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
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
