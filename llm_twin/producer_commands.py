"""``llm-twin crawl``, ``import`` and ``forget``: a person's writing into ``twin.raw-documents``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from infra import kafka, warehouse
from infra.settings import PlatformSettings
from llm_twin import stack
from producers.collect import crawl, import_paths
from producers.exports.archive import ImportLimits
from producers.ledger import Ledger
from producers.publish import Report, publish_found, publish_harvest, publish_tombstones
from producers.settings import CrawlSettings, ImportSettings
from schemas.common import AUTHOR_SLUG_PATTERN
from schemas.documents import Author

AuthorOption = Annotated[
    str,
    typer.Option("--author", help="The twin's author slug (a-z, 0-9, -).", show_default=False),
]
NameOption = Annotated[
    str | None, typer.Option("--name", help="The author's display name (default: the slug).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ForceFlag = Annotated[
    bool, typer.Option("--force", help="Publish even unchanged or forgotten documents.")
]


def _author(slug: str, name: str | None) -> Author:
    try:
        return Author(slug=slug, display_name=name or slug)
    except ValueError:
        typer.echo(f"--author must match {AUTHOR_SLUG_PATTERN}, got {slug!r}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[str], None]]:
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda _: None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=total)
        yield lambda source: progress.update(task, advance=1, description=source[-60:])


@contextmanager
def _ledger(settings: PlatformSettings, connection: stack.Stack) -> Iterator[Ledger]:
    client = warehouse.connect(connection.mongodb_uri)
    try:
        db = client[settings.mongodb_database]
        yield Ledger(db, kafka.cluster_id(connection.brokers))
    finally:
        client.close()


def _publisher(connection: stack.Stack) -> kafka.Publisher:
    return kafka.Publisher(
        kafka.make_producer(
            connection.brokers, one_record_per_batch=connection.one_record_per_batch
        ),
        connection.signer,
    )


def _finish(report: Report, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_json()))
    else:
        console = Console()
        replaced = f", replaced {len(report.replaced)}" if report.replaced else ""
        console.print(
            f"published {len(report.published)}, unchanged {len(report.unchanged)}, "
            f"forgotten {len(report.forgotten)}, failed {len(report.failed)}{replaced}",
            markup=False,
        )
        for failure in report.failed:
            # A file's name is the export's to choose: never read as markup.
            where = escape(f"{failure.source}: {failure.reason}")
            console.print(f"  [red]failed[/red] {where}", markup=True)
        if report.forgotten:
            console.print("  forgotten documents were skipped; --force publishes them again")
    if report.failed:
        raise typer.Exit(1)


def crawl_command(
    urls: Annotated[list[str], typer.Argument(metavar="URL...", help="Pages, feeds, repos.")],
    author: AuthorOption,
    name: NameOption = None,
    allow_private_networks: Annotated[
        bool,
        typer.Option(
            "--allow-private-networks", help="Allow loopback and private addresses (local sites)."
        ),
    ] = False,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Crawl pages, feeds and git repositories into the author's twin."""
    person = _author(author, name)
    settings = PlatformSettings()
    connection = stack.require(settings)
    now = datetime.now(UTC)
    policy = CrawlSettings().policy(allow_private_networks=allow_private_networks)
    with _ledger(settings, connection) as ledger:
        with _progress(len(urls), "crawling", as_json) as done:
            harvest = asyncio.run(
                crawl(
                    urls,
                    person,
                    policy=policy,
                    ledger=ledger,
                    workdir=settings.home / "repositories",
                    crawled_at=now,
                    on_done=done,
                )
            )
        report = publish_harvest(
            harvest, publisher=_publisher(connection), ledger=ledger, force=force, now=now
        )
    _finish(report, as_json)


def import_command(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH...", help="Exports, folders, repos.")
    ],
    author: AuthorOption,
    name: NameOption = None,
    import_as: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="The import's own name (one PATH): its notes keep their identity wherever "
            "the folder moves. Default: the folder's resolved location.",
        ),
    ] = None,
    force: ForceFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Import data exports (LinkedIn, X, Medium, Substack), note folders and local repositories."""
    origin = _import_name(import_as, paths)
    person = _author(author, name)
    limits = _import_limits()
    settings = PlatformSettings()
    connection = stack.require(settings)
    now = datetime.now(UTC)
    with (
        _ledger(settings, connection) as ledger,
        _progress(len(paths), "importing", as_json) as done,
    ):
        # Published as the readers find them: an export is never held in memory whole.
        found = import_paths(
            paths,
            person,
            crawled_at=now,
            workdir=settings.home / "repositories",
            limits=limits,
            on_done=done,
            origin=origin,
        )
        report = publish_found(
            found, publisher=_publisher(connection), ledger=ledger, force=force, now=now
        )
    _finish(report, as_json)


def _import_name(name: str | None, paths: list[Path]) -> str | None:
    """``--as``'s name, checked: one path, printable, no ``#`` (it ends the name in an id)."""
    if name is None:
        return None
    problem = None
    if len(paths) != 1:
        problem = "--as names one import: give it one PATH"
    elif not name.strip() or len(name) > 200:
        problem = "--as takes a name of 1 to 200 characters"
    elif "#" in name or not name.isprintable():
        problem = "--as takes a printable name without '#'"
    if problem is not None:
        typer.echo(problem, err=True)
        raise typer.Exit(2)
    return name.strip()


def _import_limits() -> ImportLimits:
    try:
        return ImportSettings().limits()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]).upper()
        typer.echo(f"bad import settings: LLM_TWIN_IMPORT_{where}: {first['msg']}", err=True)
        raise typer.Exit(2) from None


def forget_command(
    author: AuthorOption,
    document: Annotated[
        list[uuid.UUID] | None,
        typer.Option("--document", help="One document id (repeatable); default: all of them."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete the author's documents (or the given ones) everywhere, by publishing tombstones."""
    person = _author(author, None)
    settings = PlatformSettings()
    connection = stack.require(settings)
    with _ledger(settings, connection) as ledger:
        known = ledger.documents_of(person.slug)
        targets = list(document) if document else sorted(known, key=str)
        foreign = [str(i) for i in targets if i not in known]
        if foreign:
            # A tombstone deletes by id; one for another author's document must never go out.
            typer.echo(
                f"not documents of {person.slug} (or already forgotten): {', '.join(foreign)}",
                err=True,
            )
            raise typer.Exit(1)
        publish_tombstones(
            person.slug,
            targets,
            publisher=_publisher(connection),
            ledger=ledger,
            now=datetime.now(UTC),
        )
    if as_json:
        typer.echo(json.dumps({"forgotten": [str(i) for i in targets]}))
    else:
        typer.echo(f"forgot {len(targets)} document(s) of {person.slug}")
