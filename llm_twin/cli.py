"""The ``llm-twin`` command: one sub-command per job, each in its own module."""

from __future__ import annotations

import logging

import typer

from llm_twin import infra_commands, producer_commands, schema_commands

app = typer.Typer(
    name="llm-twin",
    help="A language model that writes in your own voice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(infra_commands.app, name="infra")
app.add_typer(schema_commands.app, name="schemas")
app.command("crawl")(producer_commands.crawl_command)
app.command("import")(producer_commands.import_command)
app.command("forget")(producer_commands.forget_command)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
