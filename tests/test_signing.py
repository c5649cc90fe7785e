"""Message signatures: every byte that gives a message authority is covered."""

from __future__ import annotations

import secrets

import pytest

from schemas.signing import SIGNATURE_HEADER, SignatureError, Signer, verify

TOPIC, KEY, VALUE = "twin.raw-documents", "0b7c0c1e-1111-4222-8333-444455556666", b'{"a": 1}'
HEADERS = [("author", b"ada")]


@pytest.fixture
def signer() -> Signer:
    return Signer(secrets.token_bytes(32))


def test_a_signed_message_verifies_whatever_the_header_order(signer: Signer) -> None:
    signed = signer.sign(TOPIC, KEY, VALUE, [*HEADERS, ("trace", b"x")])
    signer.verify(TOPIC, KEY.encode(), VALUE, list(reversed(signed)))
    signer.verify(TOPIC, KEY, VALUE, dict(signed))  # a client that hands headers as a mapping
    tombstone = signer.sign(TOPIC, KEY, None, HEADERS)
    signer.verify(TOPIC, KEY, None, tombstone)


@pytest.mark.parametrize(
    ("topic", "key", "value", "extra"),
    [
        ("twin.models", KEY, VALUE, []),  # replayed on another topic
        (TOPIC, "0b7c0c1e-1111-4222-8333-444455556667", VALUE, []),  # another document
        (TOPIC, KEY, b'{"a": 2}', []),  # another value
        (TOPIC, KEY, None, []),  # the document turned into a tombstone
        (TOPIC, KEY, b"", []),  # null and empty are not the same
        (TOPIC, KEY, VALUE, [("author", b"bob")]),  # a header added
    ],
    ids=["topic", "key", "value", "tombstone", "empty", "header"],
)
def test_changing_anything_breaks_the_signature(
    signer: Signer, topic: str, key: str, value: bytes | None, extra: list[tuple[str, bytes]]
) -> None:
    signed = signer.sign(TOPIC, KEY, VALUE, HEADERS)
    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify(topic, key, value, [*signed, *extra])


def test_bytes_cannot_move_between_fields(signer: Signer) -> None:
    signed = signer.sign(TOPIC, "ab", b"c", [])
    with pytest.raises(SignatureError):
        signer.verify(TOPIC, "a", b"bc", signed)


def test_unsigned_doubly_signed_and_foreign_messages_are_refused(signer: Signer) -> None:
    with pytest.raises(SignatureError, match="unsigned"):
        signer.verify(TOPIC, KEY, VALUE, HEADERS)
    signed = signer.sign(TOPIC, KEY, VALUE, HEADERS)
    with pytest.raises(SignatureError, match="2 llm-twin-signature headers"):
        signer.verify(TOPIC, KEY, VALUE, [*signed, (SIGNATURE_HEADER, b"v1=00")])
    other = Signer(secrets.token_bytes(32)).sign(TOPIC, KEY, VALUE, HEADERS)
    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify(TOPIC, KEY, VALUE, other)
    verify(None, TOPIC, KEY, VALUE, HEADERS)  # no key configured: nothing is verified


def test_a_short_key_is_refused_and_a_key_never_shows(signer: Signer) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Signer(b"too short")
    key = b"k" * 40
    assert "k" * 8 not in repr(Signer(key))
