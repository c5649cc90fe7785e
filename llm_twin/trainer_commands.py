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


def _figures(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The twin's figures of an evaluation report, for a line of `adapters list`."""
    if not evaluation:
        return None

    def twin(key: str) -> Any:
        return (evaluation.get(key) or {}).get("twin")

    return {
        "perplexity": twin("perplexity"),
        "attribution": twin("attribution"),
        "style_similarity": twin("style_similarity"),
        "ngram8_overlap": (evaluation.get("copying") or {}).get("ngram8_overlap"),
        "max_overlap_chars": (evaluation.get("copying") or {}).get("max_overlap_chars"),
    }


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
    from trainer.settings import TrainSettings

    settings = PlatformSettings()
    connection = stack.require(settings)
    with _exits(), stack.warehouse_db(settings, connection) as db:
        job = training.prepare(db, settings.home, snapshot_id, dpo=dpo)
        # prepare() has read the training settings: they are valid.
        evaluate = runtime.training_evaluator(settings, db, TrainSettings(), job.config.base_model)
        with Progress(disable=as_json, transient=True) as bar:
            task = bar.add_task(f"training {snapshot_id}", total=None)

            def progress(step: int, total: int, loss: float) -> None:
                bar.update(task, completed=step, total=total, description=f"loss {loss:.3f}")

            trained = job.run(
                db, lambda: _publisher(connection), progress=progress, evaluate=evaluate
            )
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
        "refused": trained.refused,
        "evaluation": _figures(trained.evaluation),
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    verb = "reused" if result.reused else "trained"
    typer.echo(
        f"{verb} {adapter.adapter_id}: held-out loss {result.base_eval_loss} -> {adapter.eval_loss}"
    )
    typer.echo(f"  {Path(adapter.path)}")
    if trained.refused:
        typer.echo(f"  not active: {trained.refused}")


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
    rows: list[dict[str, Any]] = [
        {
            "adapter_id": r.adapter.adapter_id,
            "author": r.adapter.author,
            "snapshot_id": r.adapter.snapshot_id,
            "eval_perplexity": r.adapter.eval_perplexity,
            "created_at": r.adapter.created_at.isoformat(),
            "active": r.active,
            "evaluation": _figures(r.evaluation),
            "refused": r.refused,
        }
        for r in found
    ]
    if as_json:
        typer.echo(json.dumps({"adapters": rows}))
        return
    for row in rows:
        mark = "*" if row["active"] else " "
        line = f"{mark} {row['adapter_id']}  perplexity {row['eval_perplexity']}"
        figures = row["evaluation"]
        if figures is not None:
            line += (
                f"  attribution {figures['attribution']}  style {figures['style_similarity']}"
                f"  8-gram copying {figures['ngram8_overlap']}"
            )
        typer.echo(line)
        if row["refused"]:
            typer.echo(f"    refused: {row['refused']}")


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
    from trainer import evaluation

    settings = PlatformSettings()
    connection = stack.require(settings)
    # A running serve/up answers the searches; a running `ingest` holds the store.
    retrieval = runtime.evaluation_retrieval(settings, busy="")

    with _exits():
        with stack.warehouse_db(settings, connection) as db:
            job = evaluation.pick(db, settings.home, author, adapter_id)
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
    _print_evaluation(job.adapter.adapter_id, report)


def _print_evaluation(adapter_id: str, report: dict[str, Any]) -> None:
    def row(label: str, figures: dict[str, Any] | None, *names: str) -> None:
        known = figures or {}
        typer.echo(f"  {label:<18}" + "  ".join(f"{n} {known.get(n)}" for n in names))

    typer.echo(f"{adapter_id} on {report['samples']} held-out documents")
    perplexity = report["perplexity"]
    row("perplexity", perplexity, "base", "twin")
    row("  on other writers", perplexity, "base_on_reference", "twin_on_reference")
    row("attribution", report["attribution"], "base", "twin", "human")
    row("style similarity", report["style_similarity"], "base", "twin", "human")
    for name in ("base", "twin", "human"):
        row(f"repetition {name}", report["repetition"][name], "distinct_2", "distinct_3")
    row("copying (twin)", report["copying"], "max_overlap_chars", "ngram8_overlap")
    row("copying (human)", report["copying"]["human"], "max_overlap_chars", "ngram8_overlap")
    row("retrieval", report["retrieval"], "hit_at_5", "mrr")
    for kind, figures in report["by_kind"].items():
        row(f"{kind} attribution", figures["attribution"], "base", "twin", "human")
    if report["judge"] is not None:
        row("judge (1-5)", report["judge"], "base", "twin")


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
