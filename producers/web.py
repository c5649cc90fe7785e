"""Article pages and feeds (RSS, Atom) into documents.

A page becomes a document only if it has real main text: bot walls, login
walls and empty shells are failures with a reason, never published.
"""

from __future__ import annotations

import asyncio
import calendar
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
import trafilatura

from producers.fetch import FEED_TYPES, HTML_TYPES, Fetcher, FetchError, Page
from producers.harvest import Harvest
from producers.html_text import fragment_text, main_text
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.ids import canonical_url

# Shorter than this after extraction, a page has no main text worth a twin.
MIN_TEXT_CHARS = 40

# Phrases and markup of the interstitials that bot protection serves instead of
# the page (Cloudflare, hCaptcha, reCAPTCHA, PerimeterX, DataDome, Incapsula,
# Medium's and Substack's own). Matched case-insensitively against the raw HTML.
BOT_WALL_MARKERS = (
    "just a moment...",
    "verify you are human",
    "checking your browser before accessing",
    "attention required! | cloudflare",
    "cf-browser-verification",
    "/cdn-cgi/challenge-platform",
    "cf_chl_opt",
    "enable javascript and cookies to continue",
    "g-recaptcha",
    "h-captcha",
    "px-captcha",
    "captcha-delivery.com",
    "_incapsula_resource",
    "are you a robot",
    "please verify you are a human",
    "ddos protection by",
)

# Sphinx and similar generators end headings with a permalink sign.
HEADERLINK = re.compile(r"[¶§]+(?=\s*$)", re.MULTILINE)

# Platform by host, for documents from the web: exact hosts and host suffixes.
PLATFORMS_BY_HOST = {
    "medium.com": "medium",
    "substack.com": "substack",
    "dev.to": "devto",
    "hashnode.dev": "hashnode",
    "linkedin.com": "linkedin",
    "github.io": "github-pages",
    "wordpress.com": "wordpress",
    "blogspot.com": "blogger",
}


@dataclass(frozen=True)
class Fetched:
    """What one URL gave: a harvest, and the validators for a conditional re-fetch."""

    harvest: Harvest
    page: Page | None


def platform_for(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().removeprefix("www.")
    for suffix, platform in PLATFORMS_BY_HOST.items():
        if host == suffix or host.endswith("." + suffix):
            return platform
    return "web"


def bot_wall(html: str) -> str | None:
    """The marker that shows ``html`` is a bot wall, if it is one."""
    lowered = html[:200_000].lower()
    return next((marker for marker in BOT_WALL_MARKERS if marker in lowered), None)


def _reason(error: FetchError) -> str:
    """An HTTP refusal that serves a challenge page is a bot wall; say so."""
    marker = bot_wall(error.body.decode("utf-8", errors="replace")) if error.body else None
    if marker is not None:
        return f"bot wall ({error.reason}; the page shows {marker!r}), not the article"
    return error.reason


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _aware(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def article_document(page: Page, author: Author, *, crawled_at: datetime) -> RawDocument:
    """The page's main text as a document; ``ValueError`` with the reason if it has none."""
    html = page.text()
    marker = bot_wall(html)
    if marker is not None:
        raise ValueError(f"bot wall (the page shows {marker!r}), not the article")
    text = _clean(HEADERLINK.sub("", main_text(html)))
    if len(text) < MIN_TEXT_CHARS:
        raise ValueError(f"no main text found ({len(text)} characters after extraction)")
    # extensive=False: dates only from markup that states them; the extensive
    # search guessed a page's date from its "© 2024" footer.
    metadata = trafilatura.extract_metadata(html, default_url=page.url, extensive=False)
    title = _clean(HEADERLINK.sub("", (metadata.title if metadata else None) or "")) or page.url
    source = canonical_url(page.url)
    extra: dict[str, Any] = {"content_type": page.content_type}
    if metadata is not None and metadata.author:
        extra["byline"] = metadata.author
    if metadata is not None and metadata.sitename:
        extra["site"] = metadata.sitename
    return RawDocument.build(
        author=author,
        kind=DocumentKind.ARTICLE,
        platform=platform_for(source),
        canonical_source=source,
        source_url=page.url,
        title=title[:1000],
        content=text,
        published_at=_aware(metadata.date if metadata else None),
        crawled_at=crawled_at,
        metadata=extra,
    )


def _entry_time(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed"):
        parsed = entry.get(key)
        if parsed:
            return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    return None


async def feed_harvest(
    page: Page, author: Author, fetcher: Fetcher, *, crawled_at: datetime
) -> Harvest:
    """One document per entry: its full content when the feed carries it, else its page."""
    harvest = Harvest()
    parsed = feedparser.parse(page.body)
    if not parsed.entries:
        problem = parsed.get("bozo_exception")
        reason = f"not a readable feed ({problem})" if problem else "the feed has no entries"
        harvest.fail(page.url, reason)
        return harvest

    async def one(number: int, entry: Any) -> Harvest:
        result = Harvest()
        label = f"{page.url}#entry {number}"
        link = entry.get("link")
        if not link:
            result.fail(label, "entry has no link")
            return result
        contents = entry.get("content") or []
        html = max((c.get("value", "") for c in contents), key=len, default="")
        text = _clean(fragment_text(html)) if html else ""
        if len(text) < MIN_TEXT_CHARS:
            # A summary-only feed: the entry's page holds the text.
            try:
                linked = await fetcher.fetch(link, accept=HTML_TYPES)
                result.documents.append(article_document(linked, author, crawled_at=crawled_at))
            except FetchError as error:
                result.fail(link, _reason(error))
            except ValueError as error:
                result.fail(link, str(error))
            return result
        source = canonical_url(link)
        result.documents.append(
            RawDocument.build(
                author=author,
                kind=DocumentKind.ARTICLE,
                platform=platform_for(source),
                canonical_source=source,
                source_url=link,
                title=_clean(entry.get("title") or link)[:1000],
                content=text,
                published_at=_entry_time(entry),
                crawled_at=crawled_at,
                metadata={"feed": page.url, "tags": [t.get("term") for t in entry.get("tags", [])]},
            )
        )
        return result

    for part in await asyncio.gather(*(one(n, e) for n, e in enumerate(parsed.entries, 1))):
        harvest.extend(part)
    return harvest


def is_feed(page: Page) -> bool:
    if page.content_type in FEED_TYPES:
        return True
    head = page.body[:512].lstrip().lower()
    return bool(re.match(rb"(<\?xml[^>]*>\s*)?<(rss|feed|rdf:rdf)[\s>]", head))


async def crawl_url(
    url: str,
    author: Author,
    fetcher: Fetcher,
    *,
    crawled_at: datetime,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Fetched:
    """A page or a feed at ``url``, decided by what the server sends back."""
    harvest = Harvest()
    try:
        page = await fetcher.fetch(
            url, accept=(*HTML_TYPES, *FEED_TYPES), etag=etag, last_modified=last_modified
        )
    except FetchError as error:
        harvest.fail(url, _reason(error))
        return Fetched(harvest, None)
    if page.not_modified:
        return Fetched(harvest, page)
    if is_feed(page):
        return Fetched(await feed_harvest(page, author, fetcher, crawled_at=crawled_at), page)
    if page.content_type not in HTML_TYPES:
        harvest.fail(url, f"content type {page.content_type} is neither a page nor a feed")
        return Fetched(harvest, None)
    try:
        harvest.documents.append(article_document(page, author, crawled_at=crawled_at))
    except ValueError as error:
        harvest.fail(url, str(error))
        return Fetched(harvest, None)
    return Fetched(harvest, page)
