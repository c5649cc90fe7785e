"""A Medium export: one article per published post in posts/*.html.

Each page is an h-entry: ``<h1 class="p-name">`` title, ``<section data-field="body"
class="e-content">`` body (which repeats the title as its first ``graf--title`` heading),
and a footer with ``<time class="dt-published" datetime="…">`` and ``<a class="p-canonical"
href="https://medium.com/@user/slug-abc123">``. Drafts are the files named ``draft_*``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import JsonValue

from producers.exports import markup
from producers.exports.archive import Archive, UnreadableFile
from producers.exports.normalize import parse_timestamp, tidy
from producers.exports.reader import ExportReader, Files, Reading, Records, whole_text
from producers.html_text import fragment_text
from schemas.documents import DocumentKind, RawDocument
from schemas.ids import canonical_url

PLATFORM = "medium"
POSTS = "posts/"
# The h-entry title's class: what tells a Medium page from any other HTML page.
MARKER = b'class="p-name"'
_SNIFFED_PAGES = 3


def recognises(archive: Archive) -> bool:
    """posts/*.html whose first pages carry Medium's h-entry markup."""
    for name in _post_names(archive)[:_SNIFFED_PAGES]:
        try:
            if MARKER in archive.read_bytes(name):
                return True
        except UnreadableFile:
            continue
    return False


def _post_names(archive: Archive) -> list[str]:
    return [
        name
        for name in archive.names
        if name.startswith(POSTS) and name.endswith(".html") and name.count("/") == 1
    ]


def _published_page(archive: Archive, name: str) -> Records[str]:
    # A draft is admitted with the other pages but never read: it is not published writing.
    if not PurePosixPath(name).name.startswith("draft_"):
        yield from whole_text(archive, name)


def _post(page: str, reading: Reading) -> RawDocument:
    root = markup.parse_page(page)
    canonical = markup.first(root, "p-canonical")
    href = str(canonical.get("href") or "").strip() if canonical is not None else ""
    if not href:
        raise ValueError("no p-canonical link")
    body = root.find(".//section[@data-field='body']")
    if body is None:
        raise ValueError("no body section (data-field=body)")
    title = markup.text_of(markup.first(root, "p-name")) or markup.text_of(root.find(".//title"))
    # The body opens with the title again; as text it would be said twice.
    markup.drop(body.find_class("graf--title"))
    text = tidy(fragment_text(markup.inner_html(body)))
    if not text:
        raise ValueError("empty after extraction")
    published = markup.first(root, "dt-published")
    stamp = str(published.get("datetime") or "") if published is not None else ""
    metadata: dict[str, JsonValue] = {}
    subtitle = markup.text_of(root.find(".//section[@data-field='subtitle']"))
    if subtitle:
        metadata["subtitle"] = subtitle
    return RawDocument.build(
        author=reading.author,
        kind=DocumentKind.ARTICLE,
        platform=PLATFORM,
        canonical_source=canonical_url(href),
        source_url=href,
        title=title,
        content=text,
        published_at=parse_timestamp(stamp) if stamp else None,
        crawled_at=reading.crawled_at,
        metadata=metadata,
    )


read_medium = ExportReader(
    missing=f"no {POSTS}*.html: not a Medium export",
    files=[Files(_post_names, _published_page, _post)],
)
