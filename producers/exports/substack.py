"""A Substack export: one article per published row of posts.csv, its body in posts/<post_id>.html.

posts.csv has the columns post_id ("123456.my-post-slug"), post_date (ISO 8601, UTC),
is_published ("true"/"false"), email_sent_at, inbox_sent_at, type, audience, title,
subtitle and podcast_url. Unpublished rows are drafts and are not imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pydantic import JsonValue

from producers.exports import csv_rows
from producers.exports.archive import DEFAULT_LIMITS, Archive, ImportLimits, UnreadableFile
from producers.exports.normalize import headline, parse_timestamp, tidy
from producers.harvest import Failure, Found
from producers.html_text import fragment_text
from schemas.documents import Author, DocumentKind, RawDocument

PLATFORM = "substack"
POSTS_CSV = "posts.csv"
_COLUMNS = ("post_id", "post_date", "is_published", "title")


def recognises(archive: Archive) -> bool:
    return POSTS_CSV in archive


def read_substack(
    path: Path, author: Author, *, crawled_at: datetime, limits: ImportLimits = DEFAULT_LIMITS
) -> Iterator[Found]:
    try:
        archive = Archive.open(path, limits)
    except UnreadableFile as error:
        yield Failure(str(path), str(error))
        return
    with archive:
        if not recognises(archive):
            yield Failure(str(path), f"no {POSTS_CSV}: not a Substack export")
            return
        # Every post body the table may name, so the zip is judged before any is read.
        archive.admit([POSTS_CSV, *(n for n in archive.names if n.startswith("posts/"))])
        source = archive.source(POSTS_CSV)
        try:
            table = archive.read_text(POSTS_CSV)
        except UnreadableFile as error:
            yield Failure(source, str(error))
            return
        for row in csv_rows.rows(table, _COLUMNS):
            if isinstance(row, csv_rows.BadRow):
                yield Failure(f"{source}#row {row.number}", row.reason)
                continue
            try:
                document = _post(archive, row.fields, author, crawled_at)
            except ValueError as error:
                yield Failure(f"{source}#row {row.number}", str(error))
                continue
            if document is not None:
                yield document


def _post(
    archive: Archive, fields: dict[str, str], author: Author, crawled_at: datetime
) -> RawDocument | None:
    """The article for one row; None for a draft."""
    post_id = fields["post_id"].strip()
    if not post_id:
        raise ValueError("no post_id")
    published = fields["is_published"].strip().lower()
    if published == "false":
        return None
    if published != "true":
        raise ValueError(f"post {post_id}: is_published is {published!r}, not true or false")
    body = f"posts/{post_id}.html"
    if body not in archive:
        raise ValueError(f"post {post_id}: {body} is missing from the export")
    try:
        text = tidy(fragment_text(archive.read_text(body)))
    except UnreadableFile as error:
        raise ValueError(f"post {post_id}: {body} {error}") from None
    if not text:
        raise ValueError(f"post {post_id}: empty after extraction")
    when = fields["post_date"].strip()
    if not when:
        raise ValueError(f"post {post_id}: published but has no post_date")
    metadata: dict[str, JsonValue] = {
        key: tidy(fields[key]) for key in ("subtitle", "audience", "type") if fields.get(key)
    }
    return RawDocument.build(
        author=author,
        kind=DocumentKind.ARTICLE,
        platform=PLATFORM,
        canonical_source=f"substack-export:{post_id}",
        title=tidy(" ".join(fields["title"].split())) or headline(text),
        content=text,
        published_at=parse_timestamp(when),
        crawled_at=crawled_at,
        metadata=metadata,
    )
