"""Wire contracts: every message round-trips through serde; bad input fails with a reason."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from schemas import ids, serde
from schemas.common import MAX_MESSAGE_BYTES
from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from schemas.export import topic_schema
from schemas.topics import RAW_DOCUMENTS, REGISTRY, topic
from tests.factories import one_of_each, raw_document
from tests.support import feed_cli, run_cli

EXAMPLES = [
    pytest.param(name, message, id=f"{name}:{type(message).__name__}")
    for name, messages in one_of_each().items()
    for message in messages
]


def test_every_registered_topic_has_examples() -> None:
    assert set(one_of_each()) == set(REGISTRY)


@pytest.mark.parametrize(("topic_name", "message"), EXAMPLES)
def test_message_round_trips_through_serde(topic_name: str, message: BaseModel) -> None:
    decoded = serde.decode(topic(topic_name), serde.encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


@pytest.mark.parametrize(("topic_name", "message"), EXAMPLES)
def test_message_validates_against_its_exported_json_schema(
    topic_name: str, message: BaseModel
) -> None:
    schema = topic_schema(topic(topic_name))
    jsonschema.validate(json.loads(serde.encode(message)), schema)


def _raw(**changes: object) -> bytes:
    record = json.loads(serde.encode(raw_document()))
    record.update(changes)
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "Input should be an object"),
        (_raw(kind="poem"), "kind: Input should be"),
        (_raw(author={"slug": "Ada Lovelace", "display_name": "Ada"}), "author.slug"),
        (_raw(crawled_at="yesterday"), "crawled_at"),
        (_raw(crawled_at="2026-11-29T10:00:00"), "crawled_at: Input should have timezone"),
        (_raw(metadata=None), "metadata"),
        (_raw(surprise=1), "surprise: Extra inputs are not permitted"),
        (_raw(schema_version=2), "schema_version"),
        (_raw(content="edited in transit"), "content_hash does not match"),
        (_raw(document_id=str(uuid.uuid4())), "document_id"),
        # Strict: no coercion of strings into numbers.
        (_raw(schema_version="1"), "schema_version"),
    ],
)
def test_malformed_raw_document_is_rejected_with_a_reason(value: bytes, reason_part: str) -> None:
    with pytest.raises(serde.DecodeError) as caught:
        serde.decode(RAW_DOCUMENTS, value)
    assert caught.value.topic == "twin.raw-documents"
    assert reason_part in caught.value.reason


def test_missing_field_is_named() -> None:
    record = json.loads(serde.encode(raw_document()))
    del record["title"]
    with pytest.raises(serde.DecodeError) as caught:
        serde.decode(RAW_DOCUMENTS, json.dumps(record).encode())
    assert [error.field for error in caught.value.errors] == ["title"]
    assert caught.value.reason == "title: Field required"


def test_unknown_event_type_is_rejected() -> None:
    value = json.dumps({"type": "tok", "request_id": str(uuid.uuid4()), "seq": 0, "text": "x"})
    with pytest.raises(serde.DecodeError) as caught:
        serde.decode(topic("twin.generation.tokens"), value.encode())
    assert "'tok'" in caught.value.reason


def test_tombstone_only_where_the_registry_allows_it() -> None:
    assert serde.decode(RAW_DOCUMENTS, None) is None
    with pytest.raises(serde.DecodeError, match="tombstone"):
        serde.decode(topic("twin.generation.requests"), None)


def test_oversized_message_is_refused_both_ways() -> None:
    huge = raw_document(content="x" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(serde.MessageTooLarge):
        serde.encode(huge)
    with pytest.raises(serde.DecodeError, match="over the"):
        serde.decode(RAW_DOCUMENTS, b" " * (MAX_MESSAGE_BYTES + 1))


def test_generation_parameters_are_bounded() -> None:
    request = one_of_each()["twin.generation.requests"][0]
    record = json.loads(serde.encode(request))
    for field, value in [("max_new_tokens", 100_000), ("temperature", 5.0), ("top_p", 0.0)]:
        with pytest.raises(serde.DecodeError, match=field):
            serde.decode(
                topic("twin.generation.requests"), json.dumps(record | {field: value}).encode()
            )


def test_document_ids_are_stable_and_per_author() -> None:
    source = ids.canonical_url("https://Example.org:443/posts/streams?utm_source=x&b=2&a=1#intro")
    assert source == "https://example.org/posts/streams?a=1&b=2"
    first = ids.document_id("ada", source)
    assert first == ids.document_id("ada", source)
    assert first != ids.document_id("grace", source)
    assert raw_document(slug="ada").document_id != raw_document(slug="grace").document_id
    # A pinned value: changing the derivation would orphan every stored document.
    assert str(ids.document_id("ada", "https://example.org/")) == str(
        uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "llm-twin/document"), "ada:https://example.org/")
    )


def test_a_new_version_is_a_new_content_hash() -> None:
    first = raw_document(content="one")
    second = raw_document(content="two")
    assert first.document_id == second.document_id
    assert first.version != second.version
    assert ids.chunk_point_id(first.document_id, first.version, 0) != ids.chunk_point_id(
        second.document_id, second.version, 0
    )


def test_canonical_url_treats_needless_escapes_as_the_same_path() -> None:
    escaped = "https://www.linkedin.com/feed/update/urn%3Ali%3Ashare%3A7012/"
    assert ids.canonical_url(escaped) == ids.canonical_url(escaped.replace("%3A", ":"))
    # An escape that matters (a space, a slash inside a segment) stays escaped.
    assert ids.canonical_url("https://a.org/x%2fy%20z") == "https://a.org/x%2Fy%20z"


def test_canonical_url_refuses_credentials() -> None:
    with pytest.raises(ValueError, match="credentials"):
        ids.canonical_url("https://user:secret@example.org/")


def test_dead_letter_keeps_size_hash_and_head_of_the_original() -> None:
    original = b"\xff" * (100 * 1024)
    letter = DeadLetter.for_message(
        topic="twin.raw-documents",
        partition=0,
        offset=7,
        key=b"k",
        value=original,
        stage="decode",
        reason="not UTF-8",
    )
    decoded = serde.decode(topic("twin.dead-letters"), serde.encode(letter))
    assert decoded.size == len(original)
    assert decoded.sha256 == hashlib.sha256(original).hexdigest()
    assert decoded.head == original[: 64 * 1024]


def test_schemas_export_writes_one_schema_per_topic(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "home", "schemas", "export", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(f"{name}.schema.json" for name in REGISTRY)
    schema = json.loads((tmp_path / "out" / "twin.raw-documents.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["x-kafka"]["key"] == "document_id"
    assert "content_hash" in schema["required"]


def test_schemas_check_names_the_bad_field(tmp_path: Path) -> None:
    good = serde.encode(raw_document())
    accepted = feed_cli(tmp_path, good, "schemas", "check", "twin.raw-documents")
    assert accepted.returncode == 0, accepted.stderr
    assert "valid RawDocument" in accepted.stdout
    rejected = feed_cli(tmp_path, _raw(kind=7), "schemas", "check", "twin.raw-documents")
    assert rejected.returncode == 1
    assert "kind" in rejected.stderr


def test_raw_document_build_and_validate_agree() -> None:
    document = raw_document()
    assert RawDocument.model_validate(document.model_dump()) == document
