"""Turn what a person names (URLs, paths) into one harvest: the routing lives here.

URL routing is a plain table from URL shape to source; a web URL is then a page
or a feed depending on what the server answers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from producers.addresses import AddressRefused, resolve
from producers.exports import stream_export
from producers.exports.archive import DEFAULT_LIMITS, ImportLimits
from producers.fetch import Fetcher, FetchPolicy
from producers.git import (
    PinnedRemote,
    canonical_repository_url,
    is_remote,
    read_repository,
    redact_credentials,
)
from producers.harvest import Failure, Found, Harvest
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
                            _repository, url, author, policy, workdir, crawled_at
                        )
                    return await _web(url, author, fetcher, ledger, crawled_at)
                finally:
                    on_done(url)

        for url, part in zip(urls, await asyncio.gather(*(one(url) for url in urls)), strict=True):
            # Whatever a crawl reports, a token or password in the URL never reaches it.
            part.failures = [
                replace(
                    failure,
                    source=redact_credentials(failure.source, url),
                    reason=redact_credentials(failure.reason, url),
                )
                for failure in part.failures
            ]
            harvest.extend(part)
    return harvest


_IMPORT_INSTEAD = "crawl reads only the web; `llm-twin import PATH` reads a local repository"


class RepositoryRefused(Exception):
    """A repository URL ``crawl`` will not clone; the message says why and what to do."""


def _repository(
    url: str, author: Author, policy: FetchPolicy, workdir: Path, crawled_at: datetime
) -> Harvest:
    """A repository crawled under the fetch policy: over http(s), to a vetted address only."""
    try:
        pinned = vetted_remote(url, allow_private_networks=policy.allow_private_networks)
    except RepositoryRefused as error:
        refused = Harvest()
        refused.fail(url, str(error))
        return refused
    return read_repository(url, author, workdir=workdir, crawled_at=crawled_at, pinned=pinned)


def vetted_remote(url: str, *, allow_private_networks: bool) -> PinnedRemote:
    """Where a clone of ``url`` may connect, or ``RepositoryRefused``.

    Only http(s) has a host the crawler can vet and pin (git's curl takes the vetted
    addresses); ssh and git:// connect wherever the name leads, and file:// and paths
    read this machine, which is what ``import`` is for.
    """
    if not is_remote(url):
        raise RepositoryRefused(f"a local path: {_IMPORT_INSTEAD}")
    scheme = urlsplit(url).scheme.lower() if "://" in url else "ssh"
    if scheme == "file":
        raise RepositoryRefused(f"a file:// URL: {_IMPORT_INSTEAD}")
    if scheme not in ("http", "https"):
        raise RepositoryRefused(
            f"crawl clones over https (or http) only, where the address it connects to is "
            f"checked, not {scheme}; clone it yourself and `llm-twin import` the checkout"
        )
    try:
        canonical_repository_url(url)  # the same rules read_repository applies, first
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
    except ValueError as error:
        raise RepositoryRefused(str(error)) from None
    if not host:
        raise RepositoryRefused("no host in URL")
    try:
        addresses = resolve(host, port, allow_private_networks=allow_private_networks)
    except AddressRefused as error:
        raise RepositoryRefused(str(error)) from None
    return PinnedRemote(host, port, tuple(addresses))


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
    limits: ImportLimits = DEFAULT_LIMITS,
    on_done: Callable[[str], None] = lambda _: None,
    origin: str | None = None,
) -> Iterator[Found]:
    """Exports, note folders and local git repositories, one item at a time.

    ``origin``: the identity of the one path imported (``import --as NAME``).
    """
    for path in paths:
        if not path.exists():
            yield Failure(str(path), "no such file or folder")
        elif (path / ".git").exists():
            # Read from git's objects, which name only tracked files (a repository is small
            # next to an export, so it is gathered whole).
            yield from read_repository(
                str(path), author, workdir=workdir, crawled_at=crawled_at
            ).found()
        else:
            yield from stream_export(
                path, author, crawled_at=crawled_at, limits=limits, origin=origin
            )
        on_done(str(path))
