"""``llm-twin ingest`` against the real stack: search, updates, tombstones, garbage, crashes.

These tests share one stack and one home of their own (not the session's), so
the topic holds only what they publish and each ingest resumes where the last
one stopped (Bytewax recovery), as a user's would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import credentials, kafka, localstack, warehouse
from infra.settings import PlatformSettings
from schemas.documents import RawDocument
from schemas.ids import chunk_point_id
from schemas.signing import Signer
from schemas.topics import RAW_DOCUMENTS
from streams.chunk import chunk
from streams.clean import clean
from streams.run import EmbedderTokens
from tests.factories import raw_document
from tests.support import cli_env, feed_cli, read_topic, run_cli, topic_ends
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ingest-home")
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    try:
        yield home
    finally:
        localstack.down(settings)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load()


def _endpoints(home: Path) -> localstack.Endpoints:
    return localstack.endpoints(PlatformSettings(home=home))


def _bootstrap(home: Path) -> str:
    bootstrap = _endpoints(home).kafka_bootstrap_servers
    assert bootstrap is not None
    return bootstrap


def _signer(home: Path) -> Signer:
    signer = credentials.signer(PlatformSettings(home=home))
    assert signer is not None, "infra up made the home's signing key"
    return signer


def publish(
    home: Path,
    *documents: RawDocument,
    raw: tuple[tuple[bytes | None, bytes | None], ...] = (),
    signer: Signer | bool | None = True,
) -> None:
    """Publish as our producers do (signed with the home's key), or with ``signer``/unsigned."""
    key_holder = _signer(home) if signer is True else signer or None
    producer = kafka.make_producer(_bootstrap(home), one_record_per_batch=True)
    with kafka.Publisher(producer, key_holder) as publisher:
        for document in documents:
            publisher.publish(RAW_DOCUMENTS, str(document.document_id), document)
        for key, value in raw:
            headers = key_holder.sign(RAW_DOCUMENTS.name, key, value, []) if key_holder else []
            producer.produce(RAW_DOCUMENTS.name, key=key, value=value, headers=headers)


def forget(home: Path, document: RawDocument) -> None:
    producer = kafka.make_producer(_bootstrap(home), one_record_per_batch=True)
    with kafka.Publisher(producer, _signer(home)) as p:
        p.publish(
            RAW_DOCUMENTS, str(document.document_id), None, headers={"author": document.author.slug}
        )


def ingest(home: Path) -> None:
    result = run_cli(home, "ingest", "--until-idle")
    assert result.returncode == 0, result.stderr[-3000:]


def start_ingest(home: Path, *, stderr: int) -> subprocess.Popen[bytes]:
    """A continuous ``llm-twin ingest`` in a process group of its own (to signal it whole)."""
    return subprocess.Popen(
        [sys.executable, "-m", "llm_twin", "ingest"],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )


def search(home: Path, author: str, query: str, k: int = 5) -> list[dict[str, object]]:
    result = run_cli(home, "search", "--author", author, "--k", str(k), "--json", query)
    assert result.returncode == 0, result.stderr[-3000:]
    results: list[dict[str, object]] = json.loads(result.stdout)["results"]
    return results


def point_ids(home: Path, author: str, embedder: Embedder) -> set[uuid.UUID]:
    with VectorStore.open(str(home / "qdrant"), dimensions=embedder.dimensions) as store:
        return store.point_ids(author)


def expected_ids(document: RawDocument, embedder: Embedder) -> set[uuid.UUID]:
    chunks = chunk(clean(document), document.kind, EmbedderTokens(embedder))
    return {chunk_point_id(document.document_id, document.version, c.index) for c in chunks}


def author() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


TOPICS = {
    "kafka": "Consumer groups share partitions; offsets are committed after the side effect.",
    "qdrant": "Each tenant gets its own vector collection, so searches never cross tenants.",
    "bytewax": "Recovery snapshots let a killed dataflow resume without losing state.",
}


def test_published_documents_become_searchable_for_their_author_only(
    home: Path, embedder: Embedder
) -> None:
    ada, grace = author(), author()
    docs = {
        name: raw_document(slug=ada, source=f"https://ada.example/{name}", content=text * 3)
        for name, text in TOPICS.items()
    }
    theirs = raw_document(slug=grace, source="https://ada.example/kafka", content=TOPICS["kafka"])
    publish(home, *docs.values(), theirs)
    ingest(home)

    top = search(home, ada, "how are kafka offsets committed by consumer groups?", k=3)
    assert top[0]["document_id"] == str(docs["kafka"].document_id)
    top = search(home, ada, "tenant isolation in a vector database")
    assert top[0]["document_id"] == str(docs["qdrant"].document_id)
    # The same text in another author's twin never shows up in Ada's, and vice versa.
    assert str(theirs.document_id) not in {r["document_id"] for r in search(home, ada, "kafka", 10)}
    assert {r["document_id"] for r in search(home, grace, "kafka", 10)} == {str(theirs.document_id)}
    assert point_ids(home, ada, embedder) == set().union(
        *(expected_ids(d, embedder) for d in docs.values())
    )


def test_an_update_replaces_chunks_and_a_tombstone_removes_everything(
    home: Path, embedder: Embedder
) -> None:
    slug = author()
    first = raw_document(
        slug=slug, source="https://ada.example/evolving", content="Alpha text. " * 200
    )
    publish(home, first)
    ingest(home)
    assert point_ids(home, slug, embedder) == expected_ids(first, embedder)

    second = raw_document(
        slug=slug, source="https://ada.example/evolving", content="Beta words. " * 50
    )
    publish(home, second)
    ingest(home)
    assert point_ids(home, slug, embedder) == expected_ids(second, embedder)

    forget(home, second)
    ingest(home)
    assert point_ids(home, slug, embedder) == set()
    client = warehouse.connect(str(_endpoints(home).mongodb_uri))
    db = client["llm_twin"]
    assert warehouse.load_raw_document(db, second.document_id) is None
    assert db[warehouse.CLEANED_DOCUMENTS].find_one({"_id": second.document_id}) is None
    deletion = db[warehouse.DELETIONS].find_one({"_id": second.document_id})
    client.close()
    assert deletion is not None and deletion["author"] == slug
    assert set(deletion) == {"_id", "author", "deleted_at"}  # content-free


def test_garbage_goes_to_dead_letters_with_reasons_and_valid_documents_around_it_are_indexed(
    home: Path, embedder: Embedder
) -> None:
    slug = author()
    before = raw_document(slug=slug, source="https://ada.example/before", content=TOPICS["kafka"])
    after = raw_document(slug=slug, source="https://ada.example/after", content=TOPICS["qdrant"])
    empty = raw_document(slug=slug, source="https://ada.example/empty", content="  \n ")
    huge = raw_document(
        slug=slug, source="https://ada.example/huge", content="x" * (9 * 1024 * 1024)
    )
    key = str(uuid.uuid4()).encode()
    start = topic_ends(_bootstrap(home), "twin.dead-letters")
    publish(home, before)
    publish(
        home, empty, huge, raw=((key, b"{not json"), (key, b'{"title": 5}'), (key, b"\xff\xfe"))
    )
    publish(home, after)
    ingest(home)

    letters = read_topic(_bootstrap(home), "twin.dead-letters", start, 5, settle_s=0.5)
    reasons = sorted(json.loads(m.value() or b"{}")["reason"] for m in letters)
    assert any("not JSON" in r for r in reasons)
    assert any("not UTF-8" in r for r in reasons)
    assert any("Field required" in r for r in reasons)
    assert any("empty after cleaning" in r for r in reasons)
    assert any("document limit" in r for r in reasons)
    assert point_ids(home, slug, embedder) == expected_ids(before, embedder) | expected_ids(
        after, embedder
    )

    shown = run_cli(home, "dead-letters", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["dead_letters"]
    assert {"stage", "reason", "topic", "partition", "offset", "size", "sha256"} <= set(rows[0])
    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert status["authors"][slug] == {"documents": 2, "chunks": 2}
    assert status["lag"]["twin.raw-documents"] == {"0": 0, "1": 0, "2": 0, "3": 0}
    assert status["dead_letters"] >= 5


def test_a_dataflow_killed_mid_batch_resumes_with_nothing_lost_or_duplicated(
    home: Path, embedder: Embedder
) -> None:
    slug = author()
    documents = [
        raw_document(
            slug=slug,
            source=f"https://ada.example/many/{n}",
            content=f"Note {n}: " + " ".join(f"word{(n * 7 + i) % 97}" for i in range(60)),
        )
        for n in range(400)
    ]
    publish(home, *documents)
    child = start_ingest(home, stderr=subprocess.DEVNULL)
    client = warehouse.connect(str(_endpoints(home).mongodb_uri))
    try:
        collection = client["llm_twin"][warehouse.CLEANED_DOCUMENTS]
        deadline = time.monotonic() + 120
        while collection.count_documents({"author": slug}) < 100:
            assert child.poll() is None, "ingest exited early"
            assert time.monotonic() < deadline, "ingest made no progress"
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)  # mid-batch: no chance to flush or snapshot
        child.wait(10)
        indexed_when_killed = collection.count_documents({"author": slug})
    finally:
        client.close()
    assert indexed_when_killed < len(documents), "killed too late to test a resume"

    ingest(home)
    expected = set().union(*(expected_ids(d, embedder) for d in documents))
    with VectorStore.open(str(home / "qdrant"), dimensions=embedder.dimensions) as store:
        assert store.point_ids(slug) == expected
        assert store.count(slug) == len(expected)  # no point twice


def test_reindex_rebuilds_an_authors_collection_from_the_warehouse(
    home: Path, embedder: Embedder
) -> None:
    slug, other = author(), author()
    mine = raw_document(slug=slug, source="https://ada.example/long", content=TOPICS["kafka"] * 12)
    theirs = raw_document(slug=other, source="https://ada.example/long", content=TOPICS["qdrant"])
    publish(home, mine, theirs)
    ingest(home)
    before = point_ids(home, slug, embedder)
    assert before == expected_ids(mine, embedder)

    # New chunking rules: the rebuilt collection holds the new chunks, and only them.
    result = run_cli(home, "reindex", "--author", slug, "--json", LLM_TWIN_INGEST_CHUNK_TOKENS="48")
    assert result.returncode == 0, result.stderr[-3000:]
    rebuilt = json.loads(result.stdout)["authors"][slug]
    small = chunk(clean(mine), mine.kind, EmbedderTokens(embedder), max_tokens=48)
    assert rebuilt == {"documents": 1, "chunks": len(small), "skipped": 0}
    after = point_ids(home, slug, embedder)
    assert after == {chunk_point_id(mine.document_id, mine.version, c.index) for c in small}
    assert len(after) > len(before)
    assert search(home, slug, "how are consumer offsets committed?")[0]["document_id"] == str(
        mine.document_id
    )
    # Another author's twin is not touched.
    assert point_ids(home, other, embedder) == expected_ids(theirs, embedder)

    nobody = run_cli(home, "reindex", "--author", "nobody-here")
    assert nobody.returncode == 2
    assert "nothing to reindex" in nobody.stderr


def test_until_idle_waits_for_a_running_dataflow_that_owns_the_store(home: Path) -> None:
    slug = author()
    live = start_ingest(home, stderr=subprocess.PIPE)
    client = warehouse.connect(str(_endpoints(home).mongodb_uri))
    try:
        cleaned = client["llm_twin"][warehouse.CLEANED_DOCUMENTS]
        documents = [
            raw_document(slug=slug, source=f"https://ada.example/live/{n}", content=text)
            for n, text in enumerate(TOPICS.values())
        ]
        publish(home, documents[0])
        deadline = time.monotonic() + 60
        while cleaned.count_documents({"author": slug}) < 1:  # the live dataflow is running
            assert live.poll() is None, live.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "the live dataflow indexed nothing"
            time.sleep(0.05)

        publish(home, *documents[1:])
        waited = run_cli(home, "ingest", "--until-idle")
        assert waited.returncode == 0, waited.stderr[-3000:]
        assert "waiting for it to catch up" in waited.stderr
        assert cleaned.count_documents({"author": slug}) == len(documents)

        # The store is the running dataflow's: another process is told so, clearly.
        busy = run_cli(home, "search", "--author", slug, "kafka")
        assert busy.returncode == 1
        assert "open in another process" in busy.stderr
        assert live.poll() is None
    finally:
        client.close()
        os.killpg(live.pid, signal.SIGINT)
        _, errors = live.communicate(timeout=30)
    assert live.returncode == 130, errors.decode()[-3000:]
    assert b"Traceback" not in errors


# Questions a reader would ask, each answered on one page (not by repeating its title).
CRAWLED_QUESTIONS = {
    "kafka-consumers.html": "what happens to partitions when a member leaves the group?",
    "qdrant-collections.html": "why give every tenant its own collection instead of a filter?",
    "bytewax-recovery.html": "what must a sink guarantee when a dataflow resumes after a crash?",
}
DOCS_QUESTIONS = {
    "getting-started.md": "How do I stop the local broker and warehouse?",
    "collecting-writing.md": "How do I import my LinkedIn data export?",
    "feature-pipeline.md": "How is source code split into chunks?",
    "recovery-and-operations.md": "Why does search fail while ingest is running?",
    "tenancy-and-security.md": "What characters are allowed in an author slug?",
    "wire-contracts.md": "How do I export JSON Schemas for the topics?",
}


def test_crawled_and_imported_documentation_answers_questions_for_its_author_only(
    home: Path, embedder: Embedder
) -> None:
    from tests.producers.site import serve

    slug, stranger = author(), author()
    docs = Path(__file__).resolve().parents[2] / "docs"
    imported = run_cli(home, "import", "--author", slug, "--json", str(docs))
    assert imported.returncode == 0, imported.stderr[-3000:]
    with serve() as site:
        urls = [f"{site.base}/docs/{name}" for name in CRAWLED_QUESTIONS]
        crawled = run_cli(
            home,
            "crawl",
            "--author",
            slug,
            "--allow-private-networks",
            "--json",
            *urls,
            LLM_TWIN_CRAWL_PER_HOST_DELAY_S="0",
        )
    assert crawled.returncode == 0, crawled.stdout + crawled.stderr[-3000:]
    publish(home, raw_document(slug=stranger, source="https://else.example/a", content="Hi."))
    ingest(home)

    top = search(home, slug, CRAWLED_QUESTIONS["kafka-consumers.html"])  # the command itself
    assert str(top[0]["source_url"]).endswith("/docs/kafka-consumers.html"), top
    titles = {}
    for name in DOCS_QUESTIONS:
        title = re.search(r"^title: (.+)$", (docs / name).read_text(), re.MULTILINE)
        assert title is not None, name
        titles[name] = title[1].strip()
    with VectorStore.open(str(home / "qdrant"), dimensions=embedder.dimensions) as store:

        def ask(whose: str, question: str) -> list[dict[str, object]]:
            return [hit.payload for hit in store.search(whose, embedder.encode_query(question), 5)]

        for name, question in CRAWLED_QUESTIONS.items():
            found = ask(slug, question)
            assert any(str(p["source_url"]).endswith(f"/docs/{name}") for p in found), question
        for name, question in DOCS_QUESTIONS.items():
            found = ask(slug, question)
            assert any(p["title"] == titles[name] for p in found), (question, found)
            theirs = {p["document_id"] for p in ask(stranger, question)}
            assert theirs.isdisjoint({p["document_id"] for p in found})
            assert all(p["author"] == stranger for p in ask(stranger, question))


def test_only_signed_documents_and_tombstones_naming_their_author_are_acted_on(
    home: Path, embedder: Embedder
) -> None:
    victim = author()
    kept = raw_document(slug=victim, source="https://ada.example/kept", content=TOPICS["kafka"])
    publish(home, kept)
    ingest(home)
    start = topic_ends(_bootstrap(home), "twin.dead-letters")
    # A hostile producer: documents in the victim's name, unsigned and signed with
    # a key of its own, and tombstones for the victim's document, one of them signed
    # by us but carrying no author header.
    forged = raw_document(slug=victim, source="https://evil.example/x", content=TOPICS["qdrant"])
    publish(home, forged, signer=False)
    publish(home, forged, signer=Signer(os.urandom(32)))
    key = str(kept.document_id).encode()
    publish(home, raw=((key, None),), signer=False)
    publish(home, raw=((key, None),))
    ingest(home)

    letters = read_topic(_bootstrap(home), "twin.dead-letters", start, 4, settle_s=0.5)
    found = sorted(
        (json.loads(m.value() or b"{}")["stage"], json.loads(m.value() or b"{}")["reason"])
        for m in letters
    )
    assert [stage for stage, _ in found] == ["validate", "verify", "verify", "verify"]
    assert "needs an author header" in found[0][1]
    assert sum("unsigned message" in reason for _, reason in found) == 2
    assert sum("bad signature" in reason for _, reason in found) == 1
    # Nothing was indexed in the victim's name and nothing of the victim's was deleted.
    assert point_ids(home, victim, embedder) == expected_ids(kept, embedder)


def test_kcat_writes_acceptable_messages_with_the_signature_schemas_sign_prints(
    home: Path, embedder: Embedder
) -> None:
    from tests.test_broker import _kcat, _kcat_env

    slug = author()
    document = raw_document(slug=slug, source="note:kcat-signed", content=TOPICS["bytewax"])
    key, value = str(document.document_id), document.model_dump_json()
    # A document, then its tombstone, both written by kcat.
    signed = feed_cli(
        home, value.encode() + b"\n", "schemas", "sign", RAW_DOCUMENTS.name, "--key", key
    )
    assert signed.returncode == 0, signed.stderr
    gone = run_cli(
        home,
        "schemas",
        "sign",
        RAW_DOCUMENTS.name,
        "--key",
        key,
        "--tombstone",
        "-H",
        f"author={slug}",
    )
    assert gone.returncode == 0, gone.stderr

    def kcat(line: str, *options: str) -> None:
        subprocess.run(
            [
                *_kcat(),
                *("-b", _bootstrap(home), "-t", RAW_DOCUMENTS.name, "-P"),
                *("-X", "batch.num.messages=1", *options),
            ],
            input=line + "\n",
            env=_kcat_env(),
            text=True,
            timeout=30,
            check=True,
        )

    kcat(value, "-k", key, "-H", signed.stdout.strip())
    ingest(home)
    assert point_ids(home, slug, embedder) == expected_ids(document, embedder)
    # kcat skips an empty line: a tombstone is a key, a tab and nothing, with -Z.
    kcat(f"{key}\t", "-K", "\t", "-Z", "-H", f"author={slug}", "-H", gone.stdout.strip())
    ingest(home)
    assert point_ids(home, slug, embedder) == set()
