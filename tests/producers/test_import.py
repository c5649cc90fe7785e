"""``llm-twin import`` end to end: exports, note folders and local repos onto the real topic."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from infra import localstack
from schemas import serde
from schemas.documents import DocumentKind, RawDocument
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
