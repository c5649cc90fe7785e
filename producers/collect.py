"""Turn what a person names (URLs, paths) into one harvest: the routing lives here.

URL routing is a plain table from URL shape to source; a web URL is then a page
or a feed depending on what the server answers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from producers.exports import read_export
from producers.fetch import Fetcher, FetchPolicy
from producers.git import read_repository
from producers.harvest import Harvest
from producers.ledger import Ledger, Validators
from producers.web import crawl_url
from schemas.documents import Author

# URL shape -> source. First match wins; anything else is fetched as a page or feed.
GIT_URL_SHAPES = (
    re.compile(r"^https?://(www\.)?github\.com/[^/]+/[^/]+/?(\.git)?(/tree/[^?#]+)?/?$"),
    re.compile(r"^https?://(www\.)?(gitlab\.com|codeberg\.org|bitbucket\.org)/[^/]+/[^/]+\.git$"),
    re.compile(r"^(git|ssh)://"),
    re.compile(r"^[\w.-]+@[\w.-]+:[\w./-]+$"),  # scp-like: git@github.com:owner/repo.git
    re.compile(r"^\S+\.git/?$"),
)

# Concurrent sources in one crawl; hosts are throttled separately by the fetch policy.
MAX_CONCURRENT_SOURCES = 8


def is_git_url(url: str) -> bool:
    return any(shape.match(url) for shape in GIT_URL_SHAPES)


async def crawl(
    urls: list[str],
    author: Author,
    *,
    policy: FetchPolicy,
    ledger: Ledger,
    workdir: Path,
    crawled_at: datetime,
    on_done: Callable[[str], None] = lambda _: None,
) -> Harvest:
    harvest = Harvest()
    gate = asyncio.Semaphore(MAX_CONCURRENT_SOURCES)
    async with Fetcher(policy) as fetcher:

        async def one(url: str) -> Harvest:
            async with gate:
                try:
                    if is_git_url(url):
                        return await asyncio.to_thread(
                            read_repository, url, author, workdir=workdir, crawled_at=crawled_at
                        )
                    return await _web(url, author, fetcher, ledger, crawled_at)
                finally:
                    on_done(url)

        for part in await asyncio.gather(*(one(url) for url in urls)):
            harvest.extend(part)
    return harvest


async def _web(
    url: str, author: Author, fetcher: Fetcher, ledger: Ledger, crawled_at: datetime
) -> Harvest:
    known = ledger.validators(author.slug, url)
    # A 304 may only stand for documents that really need no publishing (still in
    # the warehouse, or published to this broker incarnation); otherwise fetch whole.
    usable = known is not None and ledger.unchanged(known.versions) == set(known.versions)
    fetched = await crawl_url(
        url,
        author,
        fetcher,
        crawled_at=crawled_at,
        etag=known.etag if usable and known else None,
        last_modified=known.last_modified if usable and known else None,
    )
    page = fetched.page
    if page is not None and page.not_modified and known is not None:
        fetched.harvest.not_modified.extend(known.versions)
    elif page is not None and not fetched.harvest.failures:
        versions = {d.document_id: d.content_hash for d in fetched.harvest.documents}
        ledger.record_validators(
            author.slug, url, Validators(page.etag, page.last_modified, versions), crawled_at
        )
    return fetched.harvest


def import_paths(
    paths: list[Path],
    author: Author,
    *,
    crawled_at: datetime,
    workdir: Path,
    on_done: Callable[[str], None] = lambda _: None,
) -> Harvest:
    """Exports, note folders and local git repositories."""
    harvest = Harvest()
    for path in paths:
        if not path.exists():
            harvest.fail(str(path), "no such file or folder")
        elif (path / ".git").exists():
            harvest.extend(
                read_repository(str(path), author, workdir=workdir, crawled_at=crawled_at)
            )
        else:
            harvest.extend(read_export(path, author, crawled_at=crawled_at))
        on_done(str(path))
    return harvest
