"""Stable identifiers: canonical sources, document ids, content hashes, chunk ids.

docs/wire-contracts.md: a document's id is UUIDv5 of
``author_slug:canonical_source``, so the same source always yields the same id
and two authors importing the same page never share one; its version is its
content hash; a chunk's point id is UUIDv5 of ``document_id:version:index``, so
a replay overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DOCUMENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "llm-twin/document")
CHUNK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "llm-twin/chunk")

# Query parameters that only say how a reader arrived at a page.
TRACKING_PARAMETERS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "yclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "mkt_tok",
        "_hsenc",
        "_hsmi",
        "ref",
        "ref_src",
        "ref_url",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters a path may hold unescaped (RFC 3986 pchar less "%"): an escaped one
# means the same path, so "%3A" and ":" must not make two documents.
_PATH_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:@!$&'()*+,;="
)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _normalise_path(path: str) -> str:
    def one(match: re.Match[str]) -> str:
        character = chr(int(match.group(1), 16))
        return character if character in _PATH_SAFE else f"%{match.group(1).upper()}"

    return _ESCAPE.sub(one, path)


def canonical_url(url: str) -> str:
    """The URL without fragment, tracking parameters, default port or case noise.

    Remaining query parameters are sorted, so their order never changes an id.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    if parts.username:
        raise ValueError("a source URL must not carry credentials")
    query = sorted(
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if not name.lower().startswith("utm_") and name.lower() not in TRACKING_PARAMETERS
    )
    return urlunsplit((scheme, netloc, _normalise_path(parts.path) or "/", urlencode(query), ""))


def document_id(author_slug: str, canonical_source: str) -> uuid.UUID:
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"{author_slug}:{canonical_source}")


def content_hash(title: str, content: str) -> str:
    """The document's version: sha256 (hex) of its title, a NUL byte, and its content.

    The title is included because it travels with every chunk: a renamed
    document is a new version.
    """
    return hashlib.sha256(f"{title}\x00{content}".encode()).hexdigest()


def chunk_point_id(document: uuid.UUID, version: str, chunk_index: int) -> uuid.UUID:
    return uuid.uuid5(CHUNK_NAMESPACE, f"{document}:{version}:{chunk_index}")
