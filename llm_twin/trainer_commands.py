"""``llm-twin snapshot``, ``train``, ``eval``, ``trainer`` and ``adapters``: parse, call, print.

The jobs themselves are the trainer's (trainer/training.py, trainer/evaluation.py);
the model, embedder and vector store come from the composition root (llm_twin/runtime.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from infra import adapters as registry
from infra import kafka
from infra.settings import PlatformSettings
from llm_twin import runtime, stack

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
    with stack.reported():
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
    with _publisher(connection) as publisher:
        publisher.publish(DATASET_SNAPSHOTS, author, snapshot)
    summary = {
        "snapshot_id": snapshot.snapshot_id,
        "author": snapshot.author,
        "created_at": snapshot.created_at.isoformat(),
        "counts": snapshot.counts.model_dump(),
        "documents": len(snapshot.documents),
        "path": snapshot.path,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        counts = snapshot.counts
        typer.echo(
            f"{snapshot.snapshot_id}: {len(snapshot.documents)} documents, "
            f"{counts.train} train examples, {counts.test} test examples"
        )
        typer.echo(f"  {snapshot.path}")


def _model_writers(settings: PlatformSettings, instructions: bool, preferences: bool) -> Any:
    """The configured model as instruction writer and as the preference pairs' rejected side."""
    if not (instructions or preferences):
        return None, None
    from trainer.generate import base_answers, instruction_writer

    backend = runtime.load_backend(settings)
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

    from trainer import training

    settings = PlatformSettings()
    connection = stack.require(settings)
    with _exits(), stack.warehouse_db(settings, connection) as db:
        job = training.prepare(db, settings.home, snapshot_id, dpo=dpo)
        with Progress(disable=as_json, transient=True) as bar:
            task = bar.add_task(f"training {snapshot_id}", total=None)

            def progress(step: int, total: int, loss: float) -> None:
                bar.update(task, completed=step, total=total, description=f"loss {loss:.3f}")

            trained = job.run(db, lambda: _publisher(connection), progress=progress)
    result, adapter = trained.result, trained.result.adapter
    summary = {
        "adapter_id": adapter.adapter_id,
        "snapshot_id": adapter.snapshot_id,
        "path": adapter.path,
        "train_loss": adapter.train_loss,
        "eval_loss": adapter.eval_loss,
        "base_eval_loss": result.base_eval_loss,
        "eval_perplexity": adapter.eval_perplexity,
        "reused": result.reused,
        "active": trained.active,
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
    from llm_twin import live
    from trainer import evaluation
    from trainer.evaluate import Retrieval

    settings = PlatformSettings()
    connection = stack.require(settings)

    def retrieval() -> Retrieval:
        embedder = runtime.load_embedder(runtime.ingest_settings())
        return Retrieval(runtime.open_store(settings, embedder, busy=""), embedder)

    with _exits():
        with stack.warehouse_db(settings, connection) as db:
            job = evaluation.pick(db, settings.home, author, adapter_id)
        if live.live_server(settings.home) is not None and settings.qdrant_url is None:
            raise runtime.Fatal(
                "a running serve holds the vector store: stop it to evaluate (or use QDRANT_URL)"
            )
        report = job.run(
            settings.home,
            retrieval,
            max_samples=max_samples,
            max_new_tokens=max_new_tokens,
            progress=lambda step: None if as_json else typer.echo(f"{step}…", err=True),
        )
    if as_json:
        typer.echo(json.dumps(report))
        return
    perplexity, styled, found = (
        report["perplexity"],
        report["style_similarity"],
        report["retrieval"],
    )
    typer.echo(f"{job.adapter.adapter_id} on {report['samples']} held-out documents")
    typer.echo(f"  perplexity        base {perplexity['base']}  twin {perplexity['twin']}")
    typer.echo(f"  style similarity  base {styled['base']}  twin {styled['twin']}")
    typer.echo(f"  retrieval         hit@5 {found['hit_at_5']:.3f}  MRR {found['mrr']:.3f}")
    if report["judge"] is not None:
        judged = report["judge"]
        typer.echo(f"  judge (1-5)       base {judged['base']}  twin {judged['twin']}")


def trainer_command() -> None:
    """Train every snapshot announced on twin.dataset.snapshots, until Ctrl-C."""
    settings = PlatformSettings()
    connection = stack.require(settings)
    # Ctrl-C while the settings are read, before the supervisor takes the signals: stopped.
    with stack.reported(), suppress(KeyboardInterrupt):
        runtime.trainer(settings, connection, stack.say)
    stack.say("trainer stopped")
    # The trainer runs until it is stopped (Ctrl-C, SIGTERM): the shell's code for that.
    raise typer.Exit(130)


@contextmanager
def _exits() -> Iterator[None]:
    """A job's refusal as its sentence on stderr: exit 2 for nothing to do, 1 for the rest."""
    from trainer.errors import NothingToDo, Refused

    try:
        with stack.reported():
            yield
    except (NothingToDo, Refused) as error:
        stack.say(str(error))
        raise typer.Exit(NOTHING if isinstance(error, NothingToDo) else 1) from None


def _publisher(connection: stack.Stack) -> kafka.Publisher:
    producer = kafka.make_producer(
        connection.brokers, one_record_per_batch=connection.one_record_per_batch
    )
    return kafka.Publisher(producer, connection.signer)
