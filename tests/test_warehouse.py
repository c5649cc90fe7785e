"""Documents through the real warehouse (SecantusDB over the MongoDB wire protocol)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo.database import Database

from infra import warehouse
from tests.factories import raw_document


@pytest.fixture
def db(mongodb_uri: str) -> Iterator[Database[warehouse.Document]]:
    client = warehouse.connect(mongodb_uri)
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def test_a_document_round_trips(db: Database[warehouse.Document]) -> None:
    document = raw_document()
    warehouse.save_raw_document(db, document)
    assert warehouse.load_raw_document(db, document.document_id) == document


def test_a_replay_overwrites_and_a_new_version_replaces(db: Database[warehouse.Document]) -> None:
    first = raw_document(content="first version")
    warehouse.save_raw_document(db, first)
    warehouse.save_raw_document(db, first)
    second = raw_document(content="second version")
    warehouse.save_raw_document(db, second)
    assert db[warehouse.RAW_DOCUMENTS].count_documents({}) == 1
    stored = warehouse.load_raw_document(db, first.document_id)
    assert stored is not None
    assert stored.version == second.version


def test_an_unknown_document_is_none(db: Database[warehouse.Document]) -> None:
    assert warehouse.load_raw_document(db, uuid.uuid4()) is None


def test_timestamps_are_stored_as_dates(db: Database[warehouse.Document]) -> None:
    """Stored as BSON dates (not strings), so the warehouse can range-query them."""
    document = raw_document()
    warehouse.save_raw_document(db, document)
    found = db[warehouse.RAW_DOCUMENTS].find_one({"crawled_at": {"$gte": document.crawled_at}})
    assert found is not None
    assert found["_id"] == document.document_id


def test_a_redelivered_request_gets_the_next_attempt_until_it_is_answered(
    db: Database[warehouse.Document],
) -> None:
    from datetime import UTC, datetime

    request_id, now = uuid.uuid4(), datetime.now(UTC)
    assert warehouse.begin_attempt(db, request_id, now) == 1
    assert warehouse.begin_attempt(db, request_id, now) == 2  # its worker died: a retry
    warehouse.finish_attempt(db, request_id, now)
    assert warehouse.begin_attempt(db, request_id, now) is None  # answered: never twice
    assert warehouse.begin_attempt(db, uuid.uuid4(), now) == 1


def test_an_authors_display_name_comes_from_their_documents(
    db: Database[warehouse.Document],
) -> None:
    warehouse.save_raw_document(db, raw_document("ada"))
    assert warehouse.display_name(db, "ada") == "Ada Lovelace"
    assert warehouse.display_name(db, "nobody") is None
