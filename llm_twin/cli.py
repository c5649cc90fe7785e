"""The ``llm-twin`` command: one sub-command per job, each in its own module."""

from __future__ import annotations

import logging
import os
import signal

import typer

from llm_twin import (
    infra_commands,
    producer_commands,
    schema_commands,
    serve_commands,
    stream_commands,
    trainer_commands,
    up_commands,
)

app = typer.Typer(
    name="llm-twin",
    help="A language model that writes in your own voice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(infra_commands.app, name="infra")
app.add_typer(schema_commands.app, name="schemas")
app.add_typer(trainer_commands.adapters_app, name="adapters")
app.command("crawl")(producer_commands.crawl_command)
app.command("import")(producer_commands.import_command)
app.command("forget")(producer_commands.forget_command)
app.command("ingest")(stream_commands.ingest_command)
app.command("search")(stream_commands.search_command)
app.command("status")(stream_commands.status_command)
app.command("dead-letters")(stream_commands.dead_letters_command)
app.command("reindex")(stream_commands.reindex_command)
app.command("generate")(serve_commands.generate_command)
app.command("serve")(serve_commands.serve_command)
app.command("up")(up_commands.up_command)
app.command("snapshot")(trainer_commands.snapshot_command)
app.command("train")(trainer_commands.train_command)
app.command("eval")(trainer_commands.eval_command)
app.command("trainer")(trainer_commands.trainer_command)


def _without_faust_tracebacks(record: logging.LogRecord) -> bool:
    # Faust (and mode under it) log a crash with its whole traceback; the supervisor says
    # what crashed, and what it does about it, in one line beside it.
    if record.name.split(".")[0] in ("faust", "mode"):
        record.exc_info, record.exc_text = None, None
    return True


def main() -> None:
    # Everything a command writes under LLM_TWIN_HOME (documents, vectors, snapshots,
    # adapters, keys, logs) is its owner's alone, whatever the shell's umask.
    os.umask(0o077)
    # `docker compose stop` and service managers send SIGTERM: one way to stop, as for
    # Ctrl-C (a supervised process takes both signals over while its parts run).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_without_faust_tracebacks)
    # Hugging Face libraries draw a progress bar per model load ("Loading weights"):
    # noise in a command's output, and on stderr of every `--json` run.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()
