"""``llm-twin snapshot`` and ``train``: the author's writing as a dataset, then as an adapter."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from infra import adapters as registry
from infra import kafka, warehouse
from infra.settings import PlatformSettings
from llm_twin import stack

NOTHING = 2


def snapshot_command(
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
    llm_instructions: Annotated[
        bool,
        typer.Option("--llm-instructions", help="Instructions written by the configured model."),
    ] = False,
    preferences: Annotated[
        bool,
        typer.Option(
            "--preferences",
            help="Preference pairs: the author's text over the base model's (slow on a CPU).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Build a versioned dataset from the author's documents and announce it to the trainer."""
    from infra.snapshots import NothingToSnapshot, build
    from schemas.topics import DATASET_SNAPSHOTS

    settings = PlatformSettings()
    connection = stack.require(settings)
    instruct, reject = _model_writers(settings, llm_instructions, preferences)
    with stack.warehouse_db(settings, connection) as db:
        try:
            snapshot = build(
                db,
                author,
                settings.home / "snapshots",
                datetime.now(UTC),
                instruct=instruct,
                reject=reject,
            )
        except NothingToSnapshot as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(NOTHING) from None
    producer = kafka.make_producer(
        connection.brokers, one_record_per_batch=connection.one_record_per_batch
    )
    with kafka.Publisher(producer, connection.signer) as publisher:
        publisher.publish(DATASET_SNAPSHOTS, author, snapshot)
    summary = {
        "snapshot_id": snapshot.snapshot_id,
        "author": snapshot.author,
        "created_at": snapshot.created_at.isoformat(),
        "counts": snapshot.counts.model_dump(),
        "path": snapshot.path,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        counts = snapshot.counts
        typer.echo(f"{snapshot.snapshot_id}: {counts.train} train, {counts.test} test")
        typer.echo(f"  {snapshot.path}")


def _model_writers(settings: PlatformSettings, instructions: bool, preferences: bool) -> Any:
    """The configured model as instruction writer and as the preference pairs' rejected side."""
    if not (instructions or preferences):
        return None, None
    from llm_twin.serve_commands import load_backend
    from trainer.generate import base_answers, instruction_writer

    backend = load_backend(settings)
    return (
        instruction_writer(backend) if instructions else None,
        base_answers(backend) if preferences else None,
    )


def train_command(
    snapshot_id: Annotated[str, typer.Option("--snapshot", help="The snapshot to train on.")],
    dpo: Annotated[
        bool, typer.Option("--dpo", help="Then DPO on the snapshot's preference pairs.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """LoRA fine-tuning on one snapshot, in the foreground (same snapshot and config: reused)."""
    from rich.progress import Progress

    from infra import snapshots
    from llm.models import BUNDLED_MODEL_ID, ModelNotFound, resolve
    from llm.settings import LLMSettings
    from schemas.topics import MODELS
    from trainer.lora import train
    from trainer.settings import TrainSettings

    settings = PlatformSettings()
    connection = stack.require(settings)
    directory = settings.home / "snapshots" / snapshot_id
    if not (directory / snapshots.MANIFEST).is_file():
        typer.echo(f"no snapshot {snapshot_id} under {directory.parent}", err=True)
        raise typer.Exit(NOTHING)
    with stack.warehouse_db(settings, connection) as db:
        try:
            snapshot = snapshots.verified(db, snapshots.load(directory), directory.parent)
        except (snapshots.SnapshotRefused, ValueError) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
    try:
        llm = LLMSettings()
        training = TrainSettings()
        if dpo:
            training = training.model_copy(update={"dpo": True})
        base = resolve(llm.model, settings.home)
    except (ValidationError, ModelNotFound) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    with Progress(disable=as_json, transient=True) as bar:
        task = bar.add_task(f"training {snapshot_id}", total=None)

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"loss {loss:.3f}")

        try:
            result = train(
                snapshot,
                training.config(base),
                settings.home / "adapters",
                base_model_name=llm.model or BUNDLED_MODEL_ID,
                progress=progress,
            )
        except ValueError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(NOTHING) from None
    adapter = result.adapter
    # The trainer is the registry's one writer (with the files' hashes); twin.models
    # only tells a running serve to read the registry again.
    with stack.warehouse_db(settings, connection) as db:
        active = registry.register(db, adapter, datetime.now(UTC))
    if not result.reused:
        producer = kafka.make_producer(
            connection.brokers, one_record_per_batch=connection.one_record_per_batch
        )
        with kafka.Publisher(producer, connection.signer) as publisher:
            publisher.publish(MODELS, adapter.author, adapter)
    summary = {
        "adapter_id": adapter.adapter_id,
        "snapshot_id": adapter.snapshot_id,
        "path": adapter.path,
        "train_loss": adapter.train_loss,
        "eval_loss": adapter.eval_loss,
        "base_eval_loss": result.base_eval_loss,
        "eval_perplexity": adapter.eval_perplexity,
        "reused": result.reused,
        "active": active,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    verb = "reused" if result.reused else "trained"
    typer.echo(
        f"{verb} {adapter.adapter_id}: held-out loss {result.base_eval_loss} -> {adapter.eval_loss}"
    )
    typer.echo(f"  {Path(adapter.path)}")


adapters_app = typer.Typer(help="The LoRA adapters of every twin, and which one answers.")


@adapters_app.command("list")
def adapters_list(
    author: Annotated[str | None, typer.Option("--author", help="Only this author's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Every adapter, oldest first, with its scores and whether it is its author's active one."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.warehouse_db(settings, connection) as db:
        found = registry.adapters_of(db, author)
    rows = [
        {
            "adapter_id": r.adapter.adapter_id,
            "author": r.adapter.author,
            "snapshot_id": r.adapter.snapshot_id,
            "eval_perplexity": r.adapter.eval_perplexity,
            "created_at": r.adapter.created_at.isoformat(),
            "active": r.active,
        }
        for r in found
    ]
    if as_json:
        typer.echo(json.dumps({"adapters": rows}))
        return
    for row in rows:
        mark = "*" if row["active"] else " "
        typer.echo(f"{mark} {row['adapter_id']}  perplexity {row['eval_perplexity']}")


@adapters_app.command("activate")
def adapters_activate(
    adapter_id: Annotated[str, typer.Argument(metavar="ID", help="The adapter to serve.")],
) -> None:
    """Serve this adapter for its author from now on, whatever its scores."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.warehouse_db(settings, connection) as db:
        try:
            adapter = registry.activate(db, adapter_id)
        except registry.UnknownAdapter as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(NOTHING) from None
    typer.echo(f"{adapter.author} is answered by {adapter.adapter_id}")


@adapters_app.command("rollback")
def adapters_rollback(
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
) -> None:
    """Back to the adapter that was active before the current one (or the base model)."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.warehouse_db(settings, connection) as db:
        try:
            previous = registry.rollback(db, author)
        except registry.UnknownAdapter as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(NOTHING) from None
    now = previous.adapter_id if previous else "the base model"
    typer.echo(f"{author} is answered by {now}")


def eval_command(
    author: Annotated[str, typer.Option("--author", help="The twin's author slug.")],
    adapter_id: Annotated[
        str | None, typer.Option("--adapter", help="Default: the author's newest adapter.")
    ] = None,
    max_samples: Annotated[int, typer.Option("--max-samples", min=1, max=1000)] = 16,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=2048)] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate a twin on its snapshot's held-out documents: perplexity, style, retrieval."""
    from infra import snapshots
    from llm.models import ModelNotFound, resolve
    from llm.settings import LLMSettings
    from llm_twin.serve_commands import live_server
    from llm_twin.stream_commands import _qdrant_api_key
    from streams.settings import IngestSettings
    from trainer.evaluate import NothingToEvaluate, Retrieval, evaluate
    from vectorstore.embedder import Embedder
    from vectorstore.store import StoreBusy, VectorStore

    settings = PlatformSettings()
    connection = stack.require(settings)
    with stack.warehouse_db(settings, connection) as db:
        try:
            if adapter_id is not None:
                adapter = registry.get(db, adapter_id)
            else:
                mine = registry.adapters_of(db, author)
                if not mine:
                    raise registry.UnknownAdapter(f"{author} has no adapter: run `llm-twin train`")
                adapter = mine[-1].adapter
        except registry.UnknownAdapter as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(NOTHING) from None
        name = warehouse.display_name(db, author) or author
    directory = settings.home / "snapshots" / adapter.snapshot_id
    if not (directory / snapshots.MANIFEST).is_file():
        typer.echo(f"the snapshot {adapter.snapshot_id} is not under {directory.parent}", err=True)
        raise typer.Exit(NOTHING)
    if live_server(settings.home) is not None and settings.qdrant_url is None:
        typer.echo(
            "a running serve holds the vector store: stop it to evaluate (or use QDRANT_URL)",
            err=True,
        )
        raise typer.Exit(1)
    try:
        base = resolve(LLMSettings().model, settings.home)
    except (ValidationError, ModelNotFound) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    judge = _judge()
    embedder = Embedder.load(IngestSettings().embedding_model)
    try:
        store = VectorStore.open(
            settings.qdrant_location, _qdrant_api_key(settings), dimensions=embedder.dimensions
        )
    except StoreBusy as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    try:
        report = evaluate(
            adapter,
            snapshots.load(directory),
            Retrieval(store, embedder),
            base_model=base,
            author_name=name,
            max_samples=max_samples,
            max_new_tokens=max_new_tokens,
            judge=judge,
            progress=lambda step: None if as_json else typer.echo(f"{step}…", err=True),
        )
    except NothingToEvaluate as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(NOTHING) from None
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(report))
        return
    perplexity, styled, found = (
        report["perplexity"],
        report["style_similarity"],
        report["retrieval"],
    )
    typer.echo(f"{adapter.adapter_id} on {report['samples']} held-out documents")
    typer.echo(f"  perplexity        base {perplexity['base']}  twin {perplexity['twin']}")
    typer.echo(f"  style similarity  base {styled['base']}  twin {styled['twin']}")
    typer.echo(f"  retrieval         hit@5 {found['hit_at_5']:.3f}  MRR {found['mrr']:.3f}")
    if report["judge"] is not None:
        judged = report["judge"]
        typer.echo(f"  judge (1-5)       base {judged['base']}  twin {judged['twin']}")


def _judge() -> Any:
    """The configured LLM judge, or None (LLM_TWIN_JUDGE_BACKEND unset)."""
    from llm.remote import OpenAIBackend, TgiBackend
    from trainer.judge import judge_with
    from trainer.settings import JudgeSettings

    try:
        settings = JudgeSettings()
    except ValidationError as error:
        typer.echo(f"bad judge settings: {error.errors()[0]['msg']}", err=True)
        raise typer.Exit(1) from None
    if settings.backend is None:
        return None
    if not settings.url:
        typer.echo("LLM_TWIN_JUDGE_URL is needed with LLM_TWIN_JUDGE_BACKEND", err=True)
        raise typer.Exit(1)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.backend == "tgi":
        return judge_with(TgiBackend(settings.url, api_key=key))
    return judge_with(OpenAIBackend(settings.url, model=settings.model, api_key=key))


def trainer_parts(settings: PlatformSettings, connection: stack.Stack, db: Any) -> Any:
    """What the trainer consumer needs, from settings (exit 1 on bad ones)."""
    from llm.models import BUNDLED_MODEL_ID, ModelNotFound, resolve
    from llm.settings import LLMSettings
    from trainer.consumer import TrainerParts
    from trainer.settings import TrainSettings

    try:
        llm = LLMSettings()
        base = resolve(llm.model, settings.home)
        config = TrainSettings().config(base)
    except (ValidationError, ModelNotFound) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    return TrainerParts(
        bootstrap_servers=connection.brokers,
        one_record_per_batch=connection.one_record_per_batch,
        signer=connection.signer,
        db=db,
        adapters_root=settings.home / "adapters",
        snapshots_root=settings.home / "snapshots",
        config=config,
        base_model_name=llm.model or BUNDLED_MODEL_ID,
    )


def trainer_command() -> None:
    """Train every snapshot announced on twin.dataset.snapshots, until Ctrl-C."""
    import signal
    import threading

    from trainer.consumer import run

    settings = PlatformSettings()
    connection = stack.require(settings)
    stop = threading.Event()
    with stack.warehouse_db(settings, connection) as db:
        parts = trainer_parts(settings, connection, db)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        typer.echo("training each new snapshot; Ctrl-C stops", err=True)
        try:
            run(parts, stop, on_adapter=lambda a: typer.echo(f"adapter {a.adapter_id}", err=True))
        except KeyboardInterrupt:
            typer.echo("trainer stopped", err=True)
            raise typer.Exit(130) from None
