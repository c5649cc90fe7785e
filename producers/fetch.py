"""Careful HTTP fetching: politeness per host, robots.txt, bounded time, size and redirects.

Every way a fetch can go wrong ends in a ``FetchError`` whose ``reason`` a person
can act on; nothing here retries forever, follows a redirect loop, reads an
unbounded body, or reaches a private address unless told to.

A name is resolved once per request, every address it gives is vetted
(``producers.addresses``), and the connection goes to a vetted address with the
Host header and the TLS server name (SNI and the certificate check) kept for the
name: a DNS answer that changes between the check and the connection (rebinding)
cannot steer a request to an address that was never checked.
"""

from __future__ import annotations

import asyncio
import time
import urllib.robotparser
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from producers.addresses import AddressRefused, resolve
from schemas.common import MiB

USER_AGENT = "llm-twin/0.1 (a personal writing assistant; fetches its owner's own pages)"
HTML_TYPES = ("text/html", "application/xhtml+xml")
FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/xml",
    "text/xml",
)
# Transient answers worth another try; anything else 4xx is final.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DISALLOW_ALL = ["User-agent: *", "Disallow: /"]


class FetchError(Exception):
    def __init__(self, url: str, reason: str, body: bytes = b"") -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.body = body  # an error page's body, for telling a bot wall from a plain refusal


@dataclass(frozen=True)
class FetchPolicy:
    per_host_concurrency: int = 2
    # Seconds between two requests to one host; robots.txt's Crawl-delay raises it.
    per_host_delay_s: float = 1.0
    connect_timeout_s: float = 5.0
    # The whole request, body included: a slow-drip server cannot hold a crawl.
    total_timeout_s: float = 30.0
    # A document is capped at 8 MiB (docs/feature-pipeline.md); so is a page's HTML.
    max_bytes: int = 8 * MiB
    max_redirects: int = 5
    retries: int = 3
    backoff_s: float = 0.5
    max_retry_after_s: float = 10.0
    allow_private_networks: bool = False
    respect_robots_txt: bool = True
    user_agent: str = USER_AGENT


@dataclass(frozen=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    charset: str | None
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def text(self) -> str:
        return self.body.decode(self.charset or "utf-8", errors="replace")


@dataclass
class _Host:
    gate: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_request_at: float = 0.0
    delay_s: float = 0.0
    robots: urllib.robotparser.RobotFileParser | None = None


def _media_type(content_type: str) -> tuple[str, str | None]:
    media, _, rest = content_type.partition(";")
    charset = None
    for parameter in rest.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip("\"' ")
    return media.strip().lower(), charset


class Fetcher:
    """One per crawl: holds the connection pool, the per-host gates and robots.txt cache."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        # One client per host name: a pooled TLS connection was checked for one name
        # only, and requests go to addresses, so two names on one address must not share.
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._hosts: dict[str, _Host] = {}

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def _client(self, host: str) -> httpx.AsyncClient:
        if host not in self._clients:
            self._clients[host] = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(
                    self.policy.total_timeout_s, connect=self.policy.connect_timeout_s
                ),
                headers={"User-Agent": self.policy.user_agent},
                # No proxy from the environment: a proxy resolves the name itself, and
                # the address it reaches would be one nobody vetted.
                trust_env=False,
            )
        return self._clients[host]

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def fetch(
        self,
        url: str,
        *,
        accept: Iterable[str],
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> Page:
        """GET ``url`` under the policy; a 304 comes back as a ``Page`` with ``not_modified``."""
        accepted = tuple(accept)
        headers = {"Accept": ", ".join(accepted) + ", */*;q=0.1"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seen: list[str] = []
        current = url
        while True:
            await self._addresses(current)  # refused before anything, robots.txt included
            if self.policy.respect_robots_txt and not await self._robots_allow(current):
                raise FetchError(current, "disallowed by robots.txt")
            response = await self._get_with_retries(current, headers)
            if response.status not in REDIRECT_STATUSES:
                break
            location = response.location
            if not location:
                raise FetchError(current, f"HTTP {response.status} without a Location")
            seen.append(current)
            current = urljoin(current, location)
            if current in seen:
                raise FetchError(url, f"redirect loop ({' -> '.join([*seen, current])})")
            if len(seen) > self.policy.max_redirects:
                raise FetchError(url, f"more than {self.policy.max_redirects} redirects")
        if response.status == 304:
            return Page(current, 304, "", b"", None, etag, last_modified)
        if response.status >= 400:
            reason = f"HTTP {response.status} {response.reason}".strip()
            raise FetchError(current, reason, response.body)
        media, charset = _media_type(response.content_type)
        if media not in accepted:
            raise FetchError(
                current, f"content type {media or 'missing'}, expected one of {', '.join(accepted)}"
            )
        return Page(
            current,
            response.status,
            media,
            response.body,
            charset,
            response.etag,
            response.last_modified,
        )

    # -- the parts -------------------------------------------------------------

    async def _addresses(self, url: str) -> list[str]:
        """The vetted addresses of ``url``'s host, from one lookup; ``FetchError`` if refused."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(url, f"only http and https URLs can be fetched, not {parts.scheme!r}")
        host = parts.hostname
        if not host:
            raise FetchError(url, "no host in URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            return await asyncio.to_thread(
                resolve, host, port, allow_private_networks=self.policy.allow_private_networks
            )
        except ValueError as error:  # a port out of range
            raise FetchError(url, str(error)) from None
        except AddressRefused as error:
            raise FetchError(url, str(error)) from None

    def _host(self, url: str) -> _Host:
        key = urlsplit(url).netloc.lower()
        if key not in self._hosts:
            self._hosts[key] = _Host(
                gate=asyncio.Semaphore(self.policy.per_host_concurrency),
                delay_s=self.policy.per_host_delay_s,
            )
        return self._hosts[key]

    async def _robots_allow(self, url: str) -> bool:
        host = self._host(url)
        if host.robots is None:
            parts = urlsplit(url)
            robots_url = f"{parts.scheme}://{parts.netloc}/robots.txt"
            parser = urllib.robotparser.RobotFileParser(robots_url)
            try:
                response = await self._get_with_retries(robots_url, {})
            except FetchError:
                # RFC 9309: an unreachable robots.txt means "assume complete disallow".
                parser.parse(DISALLOW_ALL)
            else:
                if response.status >= 500:
                    parser.parse(DISALLOW_ALL)
                elif response.status >= 400 or response.status in REDIRECT_STATUSES:
                    parser.parse([])  # RFC 9309: unavailable means no rules
                else:
                    parser.parse(response.body.decode("utf-8", errors="replace").splitlines())
                    delay = parser.crawl_delay(self.policy.user_agent)
                    if delay is not None:
                        # Honoured, but capped: one slow host must not stall a crawl for hours.
                        host.delay_s = max(host.delay_s, min(float(delay), 30.0))
            host.robots = parser
        return host.robots.can_fetch(self.policy.user_agent, url)

    async def _get_with_retries(self, url: str, headers: dict[str, str]) -> _Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._polite_get(url, headers)
            except FetchError:
                raise
            except (httpx.TransportError, TimeoutError) as error:
                if attempt > self.policy.retries:
                    raise FetchError(url, _transport_reason(error)) from None
                await asyncio.sleep(self.policy.backoff_s * 2.0 ** (attempt - 1))
                continue
            if response.status in RETRY_STATUSES and attempt <= self.policy.retries:
                await asyncio.sleep(self._retry_delay(response, attempt))
                continue
            return response

    def _retry_delay(self, response: _Response, attempt: int) -> float:
        backoff = self.policy.backoff_s * 2.0 ** (attempt - 1)
        if response.retry_after is None:
            return backoff
        return min(max(response.retry_after, backoff), self.policy.max_retry_after_s)

    async def _polite_get(self, url: str, headers: dict[str, str]) -> _Response:
        host = self._host(url)
        async with host.gate:
            async with host.lock:
                wait = host.next_request_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                host.next_request_at = time.monotonic() + host.delay_s
            try:
                async with asyncio.timeout(self.policy.total_timeout_s):
                    return await self._get(url, headers)
            except TimeoutError:
                raise FetchError(
                    url, f"no complete answer within {self.policy.total_timeout_s:.0f} s"
                ) from None

    async def _get(self, url: str, headers: dict[str, str]) -> _Response:
        """One GET, sent to an address vetted by this request's own lookup."""
        addresses = await self._addresses(url)
        for address in addresses[:-1]:
            try:
                return await self._get_from(address, url, headers)
            except httpx.ConnectError:
                continue  # the next vetted address, as a client resolving by itself would
        return await self._get_from(addresses[-1], url, headers)

    async def _get_from(self, address: str, url: str, headers: dict[str, str]) -> _Response:
        target = httpx.URL(url)
        pinned = target.copy_with(host=address.split("%")[0])
        # The name stays what the server sees: Host, and for https the TLS server name,
        # so SNI and the certificate check are for the name and not for the address.
        named = {**headers, "Host": target.netloc.decode("ascii")}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        client = self._client(target.host)
        async with client.stream("GET", pinned, headers=named, extensions=extensions) as response:
            if response.status_code in REDIRECT_STATUSES:
                return _Response.redirect(response)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.policy.max_bytes:
                raise FetchError(url, _too_large(int(declared), self.policy.max_bytes))
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.policy.max_bytes:
                    raise FetchError(url, _too_large(len(body), self.policy.max_bytes, "over"))
            return _Response.of(response, bytes(body))


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    content_type: str
    body: bytes
    etag: str | None
    last_modified: str | None
    retry_after: float | None
    location: str | None = None

    @classmethod
    def of(cls, response: httpx.Response, body: bytes) -> _Response:
        return cls(
            status=response.status_code,
            reason=response.reason_phrase,
            content_type=response.headers.get("Content-Type", ""),
            body=body,
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )

    @classmethod
    def redirect(cls, response: httpx.Response) -> _Response:
        return cls(
            status=response.status_code,
            reason=response.reason_phrase,
            content_type="",
            body=b"",
            etag=None,
            last_modified=None,
            retry_after=None,
            location=response.headers.get("Location"),
        )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _too_large(size: int, limit: int, qualifier: str = "") -> str:
    size_text = f"{qualifier} {size / MiB:.1f} MiB".strip()
    return f"response is {size_text}, over the {limit / MiB:.0f} MiB limit"


def _transport_reason(error: Exception) -> str:
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect: {error}"
    return f"{type(error).__name__}: {error}"
