"""Message signatures: an HMAC over what gives a message its authority.

Header checks are consistency, not authentication: a hostile producer writes
the owner's slug as easily as ours do. With a per-deployment key, our
producers add a signature header to every message on a signed topic, and
consumers verify it before acting. The signature covers the topic's name (a
message signed for one topic is refused on another), the key, the value (a
tombstone's null is its own marker) and every other header, in a canonical
length-prefixed encoding, so no byte can be moved from one field to another.

A signature proves the message came from a holder of the key, not that it is
new: a replay of a signed message acts again. Everything a signed message can
do is idempotent (documents and tombstones), checked against the warehouse
(snapshots, adapters) or bounded by a deadline (generation requests).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence

SIGNATURE_HEADER = "llm-twin-signature"
_VERSION = "v1"
_NULL = struct.pack(">q", -1)

# As Kafka clients give them: a list of pairs (confluent-kafka, aiokafka) or a mapping.
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]


class SignatureError(ValueError):
    """A message that is unsigned, signed twice, or signed with another key."""


def _field(data: bytes | None) -> bytes:
    if data is None:
        return _NULL
    return struct.pack(">q", len(data)) + data


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else value


def _signed_material(
    topic: str, key: bytes | str | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> bytes:
    parts = [_VERSION.encode(), topic.encode("utf-8"), _as_bytes(key), value]
    covered = sorted(headers)
    parts.append(str(len(covered)).encode())
    for name, header_value in covered:
        parts += [name.encode("utf-8"), header_value]
    return b"".join(_field(part) for part in parts)


def _covered(headers: Headers | None) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """The headers the signature covers, and the signature headers found."""
    covered: list[tuple[str, bytes]] = []
    signatures: list[bytes] = []
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, raw in pairs:
        value = _as_bytes(raw) or b""
        if name == SIGNATURE_HEADER:
            signatures.append(value)
        else:
            covered.append((name, value))
    return covered, signatures


class Signer:
    """Signs and verifies with one deployment's key (at least 32 bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a signing key needs at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:  # never the key itself, in a log or a traceback
        return "Signer(<secret>)"

    def signature(
        self, topic: str, key: bytes | str | None, value: bytes | None, headers: Headers | None
    ) -> str:
        covered, _ = _covered(headers)
        mac = hmac.new(self._key, _signed_material(topic, key, value, covered), hashlib.sha256)
        return f"{_VERSION}={mac.hexdigest()}"

    def sign(
        self, topic: str, key: bytes | str | None, value: bytes | None, headers: Headers | None
    ) -> list[tuple[str, str | bytes | None]]:
        """``headers`` with the signature header added (any existing one replaced)."""
        covered, _ = _covered(headers)
        signature = self.signature(topic, key, value, covered)
        return [*covered, (SIGNATURE_HEADER, signature.encode())]

    def verify(
        self, topic: str, key: bytes | str | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """Return if the message was signed with this key; else raise ``SignatureError``."""
        covered, signatures = _covered(headers)
        if not signatures:
            raise SignatureError(f"unsigned message on {topic} (no {SIGNATURE_HEADER} header)")
        if len(signatures) > 1:
            raise SignatureError(f"{len(signatures)} {SIGNATURE_HEADER} headers; one expected")
        expected = self.signature(topic, key, value, covered).encode()
        if not hmac.compare_digest(signatures[0], expected):
            raise SignatureError(f"bad signature on {topic}: not signed with this deployment's key")


def verify(
    signer: Signer | None,
    topic: str,
    key: bytes | str | None,
    value: bytes | None,
    headers: Headers | None,
) -> None:
    """Verify when a key is configured; without one every message is accepted (and said so)."""
    if signer is not None:
        signer.verify(topic, key, value, headers)
