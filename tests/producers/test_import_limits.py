"""Imports read only what they were given: no symlink out of a folder, no zip bomb, and an
export streamed to the topic rather than held whole."""

from __future__ import annotations

import json
import random
import stat
import struct
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra import kafka, localstack, warehouse
from producers.exports import read_export, stream_export
from producers.exports.archive import ImportLimits
from producers.harvest import Failure, Found
from producers.ledger import Ledger
from producers.publish import publish_found
from schemas import serde
from schemas.common import MiB
from schemas.documents import Author, RawDocument
from schemas.topics import RAW_DOCUMENTS
from tests.producers.test_exports import write
from tests.producers.test_import import import_cli
from tests.support import read_topic, topic_ends

AUTHOR = Author(slug="ada", display_name="Ada Lovelace")
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def author() -> str:
    return f"l{uuid.uuid4().hex[:10]}"


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for name, data in members.items():
            zip_file.writestr(name, data)
    return path


def lie_about(path: Path, member: str, *, compress_size: int = 0, file_size: int = 0) -> None:
    """Rewrites a member's declared sizes in both its local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zip_file:
        local = zip_file.getinfo(member).header_offset
    central = _central(data, member)
    for offset, (compressed_at, size_at) in ((local, (18, 22)), (central, (20, 24))):
        if compress_size:
            struct.pack_into("<I", data, offset + compressed_at, compress_size)
        if file_size:
            struct.pack_into("<I", data, offset + size_at, file_size)
    path.write_bytes(data)


def _central(data: bytearray, member: str) -> int:
    offset = data.index(b"PK\x01\x02")
    while data[offset + 46 : offset + 46 + len(member)] != member.encode():
        offset = data.index(b"PK\x01\x02", offset + 4)
    return offset


def prose(rng: random.Random, words: int) -> str:
    """Text that compresses about as well as writing does (a few to one)."""
    return " ".join(rng.choice(_VOCABULARY) + str(rng.randrange(1000)) for _ in range(words))


_VOCABULARY = ["stream", "batch", "kafka", "lag", "offset", "broker", "sink", "retry", "window"]


# --- symlinks out of a folder -----------------------------------------------------------


def test_a_symlink_out_of_a_folder_export_is_refused_and_its_target_never_published(
    tmp_path: Path, stack: localstack.Endpoints, author: str
) -> None:
    outside = write(
        tmp_path / "elsewhere",
        {
            "id_ed25519.md": "# Key\n\nSECRET-key-material",
            "vault/diary.md": "# Diary\n\nSECRET-diary",
        },
    )
    notes = write(tmp_path / "notes", {"kept.md": "# Kept\n\nA note of my own."})
    (notes / "key.md").symlink_to(outside / "id_ed25519.md")
    (notes / "vault").symlink_to(outside / "vault", target_is_directory=True)
    (notes / "again.md").symlink_to(notes / "kept.md")  # inside: read once, where it lies

    code, report, landed = import_cli(tmp_path / "home", stack, author, notes)

    assert code == 1
    failed = {failure["source"]: failure["reason"] for failure in report["failed"]}
    assert set(failed) == {str(notes / "key.md"), str(notes / "vault")}
    assert all("leaves the imported folder" in reason for reason in failed.values())
    assert [document.title for document in landed] == ["Kept"]
    assert not any("SECRET" in document.content for document in landed)


def test_a_symlink_member_of_a_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("kept.md", "# Kept\n\nA note of my own.")
        link = zipfile.ZipInfo("key.md")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zip_file.writestr(link, "../../.ssh/id_ed25519")

    harvest = read_export(archive, AUTHOR, crawled_at=NOW)

    assert [document.title for document in harvest.documents] == ["Kept"]
    assert harvest.failures == [Failure(f"{archive}:key.md", "a symlink in the zip")]


# --- zip bombs --------------------------------------------------------------------------


def test_a_member_that_inflates_like_a_bomb_refuses_the_whole_zip(tmp_path: Path) -> None:
    archive = zip_of(
        tmp_path / "notes.zip",
        {"a.md": b"# Fine\n\nAn ordinary note.", "b.md": b"# Bomb\n\n" + b"a" * (4 * MiB)},
    )

    harvest = read_export(archive, AUTHOR, crawled_at=NOW)

    assert harvest.documents == []  # not even a.md, read before b.md would have been
    [failure] = harvest.failures
    assert failure.source == str(archive)
    assert failure.reason.startswith("refused as a zip bomb: b.md decompresses to more than 100")
    assert failure.reason.endswith("nothing is read from the zip")


def test_small_members_that_inflate_together_are_judged_as_one_zip(tmp_path: Path) -> None:
    # Each member is under the size at which its own ratio is judged; the zip is not.
    members = {f"{n:02}.md": b"# Bomblet\n\n" + b"a" * (256 * 1024) for n in range(64)}
    archive = zip_of(tmp_path / "notes.zip", members)

    harvest = read_export(archive, AUTHOR, crawled_at=NOW)

    assert harvest.documents == []
    [failure] = harvest.failures
    assert "times the size of the whole zip" in failure.reason


def test_a_member_that_understates_its_compression_is_judged_against_the_zips_size(
    tmp_path: Path,
) -> None:
    # The header claims 4 MiB stored in 4 MiB: 1:1. The zip on disk, which cannot lie, is
    # a few KiB.
    archive = zip_of(tmp_path / "notes.zip", {"b.md": b"# Bomb\n\n" + b"a" * (4 * MiB)})
    lie_about(archive, "b.md", compress_size=4 * MiB)

    harvest = read_export(archive, AUTHOR, crawled_at=NOW)

    assert harvest.documents == []
    [failure] = harvest.failures
    assert failure.reason.startswith("refused as a zip bomb")


def test_a_member_that_declares_less_than_it_holds_is_read_no_further(tmp_path: Path) -> None:
    # zipfile stops at the declared size and the CRC then fails; the bytes are counted
    # against the limits as they come out all the same.
    archive = zip_of(
        tmp_path / "notes.zip",
        {"a.md": b"# Fine\n\nAn ordinary note.", "b.md": b"# Bomb\n\n" + b"a" * (64 * MiB)},
    )
    lie_about(archive, "b.md", file_size=100)

    harvest = read_export(archive, AUTHOR, crawled_at=NOW)

    assert [document.title for document in harvest.documents] == ["Fine"]
    [failure] = harvest.failures
    assert failure.source == f"{archive}:b.md"
    assert failure.reason.startswith("damaged zip member: Bad CRC-32")


def test_bytes_are_counted_as_they_come_out_not_taken_from_the_headers(tmp_path: Path) -> None:
    # Ten rows name one 512 KiB post: its honest header passes, reading it ten times does not.
    rng = random.Random(5)
    rows = "".join(f"1.same,2024-01-0{n}T00:00:00Z,true,Again {n}\n" for n in range(1, 10))
    archive = zip_of(
        tmp_path / "substack.zip",
        {
            "posts.csv": f"post_id,post_date,is_published,title\n{rows}".encode(),
            "posts/1.same.html": f"<p>{prose(rng, 60_000)}</p>".encode()[: 512 * 1024],
        },
    )

    harvest = read_export(
        archive, AUTHOR, crawled_at=NOW, limits=ImportLimits(max_zip_bytes=2 * MiB)
    )

    assert len(harvest.documents) == 3  # 1.5 MiB read; the fourth would pass 2 MiB
    [failure] = harvest.failures
    assert failure.source == str(archive)
    assert failure.reason.endswith(
        "in all (LLM_TWIN_IMPORT_MAX_ZIP_BYTES); nothing more is read from the zip"
    )


def test_a_zip_over_the_total_limit_publishes_nothing(
    tmp_path: Path, stack: localstack.Endpoints, author: str
) -> None:
    rng = random.Random(7)
    notes = {f"{n}.md": f"# Note {n}\n\n{prose(rng, 80_000)}".encode() for n in range(3)}
    archive = zip_of(tmp_path / "notes.zip", notes)  # about 2.2 MiB out, 0.6 MiB in

    code, report, landed = import_cli(
        tmp_path / "home", stack, author, archive, LLM_TWIN_IMPORT_MAX_ZIP_BYTES=str(2 * MiB)
    )

    assert code == 1
    assert landed == []
    [failure] = report["failed"]
    assert failure["source"] == str(archive)
    assert "more than 2 MiB in all (LLM_TWIN_IMPORT_MAX_ZIP_BYTES)" in failure["reason"]


def test_an_x_archive_with_a_large_tweets_js_and_media_still_imports(tmp_path: Path) -> None:
    rng = random.Random(3)
    tweets = [
        {
            "tweet": {
                "id_str": str(1_000_000 + n),
                "full_text": prose(rng, 40),
                "created_at": "Wed Oct 10 20:19:24 +0000 2018",
                "entities": {"urls": [], "hashtags": [], "user_mentions": []},
            }
        }
        for n in range(6000)
    ]
    script = "window.YTD.tweets.part0 = " + json.dumps(tweets, indent=2)
    assert len(script) > 2 * MiB  # crosses the reader's chunks more than once
    archive = zip_of(
        tmp_path / "twitter.zip",
        {
            "Your archive.html": b"<html></html>",
            "data/tweets.js": script.encode(),
            "data/tweets_media/1000000-photo.jpg": rng.randbytes(2 * MiB),
        },
    )

    harvest = read_export(archive, AUTHOR, crawled_at=NOW)

    assert harvest.failures == []
    assert len(harvest.documents) == 6000
    assert harvest.documents[-1].content == tweets[-1]["tweet"]["full_text"]


# --- streaming --------------------------------------------------------------------------


def test_documents_reach_the_topic_while_the_export_is_still_being_read(
    tmp_path: Path, bootstrap_servers: str, mongodb_uri: str, author: str
) -> None:
    notes = write(tmp_path / "notes", {f"{n}.md": f"# Note {n}\n\nWritten." for n in range(7)})
    person = Author(slug=author, display_name="Ada Lovelace")
    client = warehouse.connect(mongodb_uri)
    database = f"test_{uuid.uuid4().hex[:12]}"
    ledger = Ledger(client[database], kafka.cluster_id(bootstrap_servers))
    start = topic_ends(bootstrap_servers, RAW_DOCUMENTS.name)
    published_early: set[uuid.UUID] = set()

    def reading() -> Iterator[Found]:
        read: dict[uuid.UUID, str] = {}
        for item in stream_export(notes, person, crawled_at=NOW):
            yield item
            assert isinstance(item, RawDocument)
            read[item.document_id] = item.content_hash
            if len(read) == 3:
                # Three notes of seven read: the first batch is already published, and
                # the last note, not yet read, is rewritten.
                published_early.update(ledger.unchanged(read))
                (notes / "6.md").write_text("# Note 6\n\nRewritten while importing.")

    producer = kafka.make_producer(bootstrap_servers, one_record_per_batch=True)
    try:
        with kafka.Publisher(producer) as publisher:
            report = publish_found(
                reading(),
                publisher=publisher,
                ledger=ledger,
                force=False,
                now=NOW,
                batch_documents=3,
            )
        landed = [
            serde.decode(RAW_DOCUMENTS, message.value())
            for message in read_topic(bootstrap_servers, RAW_DOCUMENTS.name, start, 7)
        ]
    finally:
        client.drop_database(database)
        client.close()

    assert len(report.published) == 7 and report.failed == []
    assert len(published_early) == 3
    assert {d.document_id for d in landed if d.author.slug == author} == set(report.published)
    last = next(d for d in landed if d.title == "Note 6")
    assert last.content.endswith("Rewritten while importing.")
