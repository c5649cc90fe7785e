"""A Substack export: one article per published row of posts.csv, its body in posts/<post_id>.html.

posts.csv has the columns post_id ("123456.my-post-slug"), post_date (ISO 8601, UTC),
is_published ("true"/"false"), email_sent_at, inbox_sent_at, type, audience, title,
subtitle and podcast_url. Unpublished rows are drafts and are not imported.
"""

from __future__ import annotations

from pydantic import JsonValue

from producers.exports.archive import Archive, UnreadableFile
from producers.exports.normalize import headline, parse_timestamp, tidy
from producers.exports.reader import ExportReader, Files, Reading, table
from producers.html_text import fragment_text
from schemas.documents import DocumentKind, RawDocument

PLATFORM = "substack"
POSTS_CSV = "posts.csv"
_COLUMNS = ("post_id", "post_date", "is_published", "title")


def recognises(archive: Archive) -> bool:
    return POSTS_CSV in archive


def _table(archive: Archive) -> list[str]:
    return [POSTS_CSV] if POSTS_CSV in archive else []


def _bodies(archive: Archive) -> list[str]:
    """Every post body the table may name."""
    return [name for name in archive.names if name.startswith("posts/")]


def _post(fields: dict[str, str], reading: Reading) -> RawDocument | None:
    """The article for one row; None for a draft."""
    archive = reading.archive
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
        author=reading.author,
        kind=DocumentKind.ARTICLE,
        platform=PLATFORM,
        canonical_source=f"substack-export:{post_id}",
        title=tidy(" ".join(fields["title"].split())) or headline(text),
        content=text,
        published_at=parse_timestamp(when),
        crawled_at=reading.crawled_at,
        metadata=metadata,
    )


read_substack = ExportReader(
    missing=f"no {POSTS_CSV}: not a Substack export",
    files=[Files(_table, table(_COLUMNS), _post)],
    also_reads=_bodies,
)
