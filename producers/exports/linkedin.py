"""LinkedIn's "Get a copy of your data" export: posts from Shares.csv, articles from Articles/.

Shares.csv has the columns Date, ShareLink, ShareCommentary, SharedUrl, MediaUrl and
Visibility; Date is UTC ("2023-05-04 10:12:55"). Each article is one HTML page under
Articles/Articles/: an ``<h1>`` title (a link to the article once it is published), a
``<p class="created">Created on …</p>``, a ``<p class="published">Published on …</p>`` when
it was published, then the body.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import PurePosixPath

from pydantic import JsonValue

from producers.exports import markup
from producers.exports.archive import Archive
from producers.exports.normalize import headline, parse_timestamp, tidy
from producers.exports.reader import ExportReader, Files, Reading, table, whole_text
from producers.html_text import fragment_text
from schemas.documents import DocumentKind, RawDocument
from schemas.ids import canonical_url

PLATFORM = "linkedin"
SHARES = "Shares.csv"
ARTICLES = "Articles/"
_SHARE_COLUMNS = ("Date", "ShareLink", "ShareCommentary")


def recognises(archive: Archive) -> bool:
    return SHARES in archive or bool(_article_names(archive))


def _shares(archive: Archive) -> list[str]:
    return [SHARES] if SHARES in archive else []


def _article_names(archive: Archive) -> list[str]:
    return [n for n in archive.names if n.startswith(ARTICLES) and n.endswith(".html")]


def _share(fields: dict[str, str], reading: Reading) -> RawDocument | None:
    """The post in one Shares.csv row; None for a repost without words of the author's own."""
    commentary = fields["ShareCommentary"]
    if not commentary.strip().strip('"').strip():
        return None
    text = tidy(_unwrap_quoted_lines(commentary))
    if not text:
        raise ValueError("empty after extraction")
    when = fields["Date"].strip()
    try:
        # A spelled-out zone ("2023-05-04 10:12:55 UTC") is accepted too: it is UTC either way.
        published_at = parse_timestamp(when.removesuffix(" UTC"))
    except ValueError:
        raise ValueError(f"unreadable Date {when!r}") from None
    link = fields["ShareLink"].strip()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    metadata: dict[str, JsonValue] = {
        key: fields.get(column, "").strip()
        for key, column in (
            ("shared_url", "SharedUrl"),
            ("media_url", "MediaUrl"),
            ("visibility", "Visibility"),
        )
        if fields.get(column, "").strip()
    }
    return RawDocument.build(
        author=reading.author,
        kind=DocumentKind.POST,
        platform=PLATFORM,
        canonical_source=canonical_url(link) if link else f"linkedin-share:{when}:{digest}",
        source_url=link or None,
        title=headline(text),
        content=text,
        published_at=published_at,
        crawled_at=reading.crawled_at,
        metadata=metadata,
    )


def _unwrap_quoted_lines(commentary: str) -> str:
    """The commentary without the quotes LinkedIn wraps around each line of a multi-line post.

    After CSV decoding, such a post reads ``First"`` / ``""`` / ``"Second"`` / ``"Last``:
    every line break sits between a closing and an opening quote, and a blank line is ``""``.
    Text that does not have that shape everywhere is left as it is.
    """
    lines = commentary.replace("\r\n", "\n").split("\n")
    if len(lines) < 2:
        return commentary
    middle = lines[1:-1]
    wrapped = (
        lines[0].endswith('"')
        and lines[-1].startswith('"')
        and all(len(line) >= 2 and line[0] == line[-1] == '"' for line in middle)
    )
    if not wrapped:
        return commentary
    inner = [lines[0][:-1], *(line[1:-1] for line in middle), lines[-1][1:]]
    return "\n".join(inner)


def _article(page: str, reading: Reading) -> RawDocument:
    root = markup.parse_page(page)
    heading = root.find(".//h1")
    title = markup.text_of(heading) or markup.text_of(root.find(".//title"))
    link = heading.find(".//a[@href]") if heading is not None else None
    created = _dated_line(root, "created", "Created on")
    published = _dated_line(root, "published", "Published on")
    markup.drop(
        [e for e in (heading, root.find(".//head")) if e is not None]
        + root.find_class("created")
        + root.find_class("published")
    )
    body = root.find(".//body")
    text = tidy(fragment_text(markup.inner_html(body if body is not None else root)))
    if not text:
        raise ValueError("empty after extraction")
    metadata: dict[str, JsonValue] = {"published": published is not None}
    if created is not None:
        metadata["created_at"] = created.isoformat()
    return RawDocument.build(
        author=reading.author,
        kind=DocumentKind.ARTICLE,
        platform=PLATFORM,
        canonical_source=f"linkedin-article:{PurePosixPath(reading.name).name}",
        source_url=str(link.get("href")).strip() if link is not None else None,
        title=title,
        content=text,
        published_at=published,
        crawled_at=reading.crawled_at,
        metadata=metadata,
    )


def _dated_line(root: markup.Element, css_class: str, prefix: str) -> datetime | None:
    line = markup.text_of(markup.first(root, css_class))
    if not line:
        return None
    return parse_timestamp(line.removeprefix(prefix))


read_linkedin = ExportReader(
    missing=f"no {SHARES} or {ARTICLES}*.html: not a LinkedIn export",
    files=[
        Files(_shares, table(_SHARE_COLUMNS), _share),
        Files(_article_names, whole_text, _article),
    ],
)
