"""``llm-twin import`` end to end: exports, note folders and local repos onto the real topic."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra import kafka, localstack, warehouse
from infra.settings import PlatformSettings
from producers.ledger import Ledger
from producers.publish import publish_found
from schemas import serde
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.topics import RAW_DOCUMENTS
from tests.producers.test_exports import linkedin_export, notes_folder
from tests.support import read_topic, run_cli, topic_ends

TOPIC = RAW_DOCUMENTS.name


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _repository(root: Path) -> Path:
    root.mkdir()
    (root / "src").mkdir()
    (root / "src" / "stream.py").write_text("def stream():\n    return 'flowing'\n")
    (root / "README.md").write_text("# Stream tools\n\nSmall helpers for streams.\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def import_cli(
    home: Path, stack: localstack.Endpoints, author: str, *paths: Path, **env: str
) -> tuple[int, dict[str, list], list[RawDocument]]:  # type: ignore[type-arg]
    """``llm-twin import --json PATHS``: its exit code, its report, what landed on the topic."""
    assert stack.kafka_bootstrap_servers and stack.mongodb_uri
    start = topic_ends(stack.kafka_bootstrap_servers, TOPIC)
    result = run_cli(
        home,
        "import",
        "--author",
        author,
        "--json",
        *map(str, paths),
        KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap_servers,
        MONGODB_URI=stack.mongodb_uri,
        LLM_TWIN_KAFKA_ONE_RECORD_PER_BATCH="true",
        **env,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    landed = read_topic(
        stack.kafka_bootstrap_servers, TOPIC, start, len(report["published"]), settle_s=0.5
    )
    return result.returncode, report, [serde.decode(RAW_DOCUMENTS, m.value()) for m in landed]


@pytest.fixture
def author() -> str:
    return f"i{uuid.uuid4().hex[:10]}"


def test_notes_and_a_local_repository_land_on_the_topic_once_and_only_once(
    tmp_path: Path, stack: localstack.Endpoints, author: str
) -> None:
    notes = notes_folder(tmp_path / "notes")
    repo = _repository(tmp_path / "repo")
    code, report, landed = import_cli(tmp_path / "home", stack, author, notes, repo)
    # The notes fixture holds a broken and an empty note on purpose: reported, the rest published.
    assert sorted(Path(f["source"]).name for f in report["failed"]) == ["broken.md", "empty.md"]
    assert code == 1
    kinds = sorted(d.kind for d in landed)
    files = sorted(d.title for d in landed if d.kind is DocumentKind.REPOSITORY_FILE)
    assert files == ["README.md", "src/stream.py"]  # no document for the binary
    assert DocumentKind.NOTE in kinds
    assert all(d.author.slug == author for d in landed)

    code, again, landed = import_cli(tmp_path / "home", stack, author, notes, repo)
    assert again["published"] == []
    assert landed == []
    assert sorted(again["unchanged"]) == sorted(report["published"])


def test_a_malformed_export_names_file_and_record_and_the_good_records_still_land(
    tmp_path: Path, stack: localstack.Endpoints, author: str
) -> None:
    export = linkedin_export(tmp_path / "linkedin")
    code, report, landed = import_cli(tmp_path / "home", stack, author, export)
    assert code == 1
    assert landed, "the good shares are published"
    assert {d.platform for d in landed} == {"linkedin"}
    sources = [failure["source"] for failure in report["failed"]]
    assert any("Shares.csv#row" in source for source in sources)
    assert all(failure["reason"] for failure in report["failed"])


def test_a_missing_path_is_a_failure(
    tmp_path: Path, stack: localstack.Endpoints, author: str
) -> None:
    code, report, landed = import_cli(tmp_path / "home", stack, author, tmp_path / "nope")
    assert code == 1
    assert report["failed"] == [
        {"source": str(tmp_path / "nope"), "reason": "no such file or folder"}
    ]
    assert landed == []


def test_notes_imported_under_their_old_identity_are_replaced_on_their_next_import(
    tmp_path: Path, stack: localstack.Endpoints, author: str
) -> None:
    """Before imports had an identity, two folders that both held index.md were one document
    (``note:index.md``). The next import replaces it: published anew, the old one forgotten
    with a tombstone, never duplicated; another author's old note is left alone."""
    assert stack.kafka_bootstrap_servers and stack.mongodb_uri
    for name in ("blog", "journal"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.md").write_text(f"# {name}\n\nThe {name}'s own words.\n")
    other = f"o{uuid.uuid4().hex[:10]}"
    old = {
        slug: RawDocument.build(
            author=Author(slug=slug, display_name=slug),
            kind=DocumentKind.NOTE,
            platform="notes",
            canonical_source="note:index.md",
            title="journal",
            content="The journal's own words.",
            crawled_at=datetime.now(UTC),
        )
        for slug in (author, other)
    }
    client = warehouse.connect(stack.mongodb_uri)
    try:
        ledger = Ledger(
            client[PlatformSettings().mongodb_database],
            kafka.cluster_id(stack.kafka_bootstrap_servers),
        )
        with kafka.Publisher(
            kafka.make_producer(stack.kafka_bootstrap_servers, one_record_per_batch=True)
        ) as publisher:
            publish_found(
                old.values(), publisher=publisher, ledger=ledger, force=False, now=datetime.now(UTC)
            )

        start = topic_ends(stack.kafka_bootstrap_servers, TOPIC)
        result = run_cli(
            tmp_path / "home",
            "import",
            "--author",
            author,
            "--json",
            str(tmp_path / "blog"),
            KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap_servers,
            MONGODB_URI=stack.mongodb_uri,
            LLM_TWIN_KAFKA_ONE_RECORD_PER_BATCH="true",
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert len(report["published"]) == 1
        assert report["replaced"] == [str(old[author].document_id)]
        landed = read_topic(stack.kafka_bootstrap_servers, TOPIC, start, 2, settle_s=0.5)
        tombstones = [m for m in landed if m.value() is None]
        assert [m.key() for m in tombstones] == [str(old[author].document_id).encode()]
        assert dict(tombstones[0].headers() or [])["author"] == author.encode()
        assert ledger.current(author, [old[author].document_id]) == set()
        assert ledger.current(other, [old[other].document_id]) == {old[other].document_id}

        # The other folder is a document of its own; the old one is gone already.
        code, second, _ = import_cli(tmp_path / "home", stack, author, tmp_path / "journal")
        assert code == 0 and len(second["published"]) == 1 and second["replaced"] == []
        assert second["published"] != report["published"]
        # Importing the same folder again is idempotent.
        code, third, _ = import_cli(tmp_path / "home", stack, author, tmp_path / "blog")
        assert code == 0 and third["published"] == [] and third["unchanged"] == report["published"]
        assert ledger.documents_of(author) == {
            uuid.UUID(i) for i in report["published"] + second["published"]
        }
    finally:
        client.close()


def test_an_import_name_is_checked(tmp_path: Path, stack: localstack.Endpoints) -> None:
    assert stack.kafka_bootstrap_servers and stack.mongodb_uri
    for name, paths in (("a#b", ["x"]), ("ok", ["x", "y"]), ("bad\x07", ["x"])):
        result = run_cli(
            tmp_path / "home",
            "import",
            "--author",
            "ada",
            "--as",
            name,
            *(str(tmp_path / p) for p in paths),
            KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap_servers,
            MONGODB_URI=stack.mongodb_uri,
        )
        assert result.returncode == 2 and "--as" in result.stderr, (name, result.stderr)
