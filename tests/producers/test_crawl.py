"""``llm-twin crawl`` and ``forget`` against a real HTTP server, the real broker and warehouse.

What lands on ``twin.raw-documents`` is checked by consuming it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import localstack
from schemas import serde
from schemas.documents import RawDocument
from schemas.ids import canonical_url, document_id
from schemas.topics import RAW_DOCUMENTS
from tests.producers.site import DOC_PAGES, FIXTURES, Site, rss, serve
from tests.support import read_topic, run_cli, topic_ends

TOPIC = RAW_DOCUMENTS.name


@pytest.fixture
def site() -> Iterator[Site]:
    with serve() as running:
        yield running


@pytest.fixture
def author() -> str:
    """A fresh author per test: the warehouse and ledger outlive a test."""
    return f"t{uuid.uuid4().hex[:10]}"


class Crawler:
    def __init__(self, home: Path, stack: localstack.Endpoints) -> None:
        assert stack.kafka_bootstrap_servers and stack.mongodb_uri
        self.home = home
        self.bootstrap = stack.kafka_bootstrap_servers
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            "MONGODB_URI": stack.mongodb_uri,
            "LLM_TWIN_CRAWL_PER_HOST_DELAY_S": "0",
            "LLM_TWIN_CRAWL_TIMEOUT_S": "2",
            "LLM_TWIN_CRAWL_RETRIES": "1",
            # The session's broker is Tansu, though the CLI sees it as external here.
            "LLM_TWIN_KAFKA_ONE_RECORD_PER_BATCH": "true",
        }

    def run(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, list]]:  # type: ignore[type-arg]
        result = run_cli(self.home, *args, "--json", **self.env)
        assert result.stdout, result.stderr
        return result, json.loads(result.stdout)

    def crawl(
        self, author: str, *urls: str, flags: tuple[str, ...] = ()
    ) -> tuple[
        subprocess.CompletedProcess[str], dict[str, list], list[RawDocument | None]  # type: ignore[type-arg]
    ]:
        """Crawl, and return what landed on the topic because of it."""
        start = topic_ends(self.bootstrap, TOPIC)
        result, report = self.run(
            "crawl", "--author", author, "--allow-private-networks", *flags, *urls
        )
        landed = read_topic(self.bootstrap, TOPIC, start, len(report["published"]), settle_s=0.5)
        return result, report, [serde.decode(RAW_DOCUMENTS, m.value()) for m in landed]


@pytest.fixture
def crawler(tmp_path: Path, stack: localstack.Endpoints) -> Crawler:
    return Crawler(tmp_path, stack)


def test_documentation_pages_become_one_document_each_and_a_recrawl_publishes_nothing(
    crawler: Crawler, site: Site, author: str
) -> None:
    urls = [f"{site.base}/docs/{page.name}" for page in DOC_PAGES]
    result, report, landed = crawler.crawl(author, *urls)
    assert result.returncode == 0, result.stderr
    assert report["failed"] == []
    assert len(landed) == len(DOC_PAGES) == len(report["published"])
    by_title = {d.title: d for d in landed if d is not None}
    assert set(by_title) == {
        "Kafka consumer groups explained",
        "Collections and payload filters",
        "Recovery and resume",
    }
    kafka_page = by_title["Kafka consumer groups explained"]
    # The main text, whole: every paragraph, the code block and the table.
    assert "A consumer group is a set of consumers" in kafka_page.content
    assert "Offsets are stored per group, per partition" in kafka_page.content
    assert "consumer.store_offsets(message)" in kafka_page.content
    assert "session.timeout.ms" in kafka_page.content
    assert "\n\n" in kafka_page.content  # paragraphs kept apart
    assert kafka_page.published_at is not None and kafka_page.published_at.year == 2024
    qdrant_page = by_title["Collections and payload filters"]
    assert "Isolation by construction beats isolation by convention" in qdrant_page.content
    assert "drops its collection" in qdrant_page.content
    for document in landed:
        assert document is not None
        # Navigation, sidebars, breadcrumbs and footers stay out.
        for boilerplate in (
            "Navigation link text",
            "Sidebar link",
            "sidebar entry",
            "Pricing page link",
            "Footer",
            "menu entry",
            "Breadcrumb",
            "Quick search",
        ):
            assert boilerplate not in document.content
        assert document.author.slug == author
        assert document.document_id == document_id(author, canonical_url(document.source_url or ""))

    again, report, landed = crawler.crawl(author, *urls)
    assert again.returncode == 0
    assert report["published"] == []
    assert sorted(report["unchanged"]) == sorted(str(d.document_id) for d in by_title.values())
    assert landed == []


def test_failures_are_reported_and_never_published(
    crawler: Crawler, site: Site, author: str
) -> None:
    good = f"{site.base}/docs/kafka-consumers.html"
    bad = {
        f"{site.base}/botwall.html": "bot wall",
        f"{site.base}/missing.html": "HTTP 404",
        f"{site.base}/huge.html": "over the 8 MiB limit",
        f"{site.base}/slow.html": "within 2 s",
        f"{site.base}/loop-a": "redirect loop",
        f"{site.base}/private/secret.html": "robots.txt",
        f"{site.base}/image.png": "content type image/png",
        f"{site.base}/empty.html": "no main text",
    }
    result, report, landed = crawler.crawl(author, good, *bad)
    assert result.returncode == 1
    reasons = {failure["source"]: failure["reason"] for failure in report["failed"]}
    assert set(reasons) == set(bad)
    for url, expected in bad.items():
        assert expected in reasons[url], (url, reasons[url])
    assert [d.title for d in landed if d is not None] == ["Kafka consumer groups explained"]


def test_private_addresses_are_refused_without_the_flag(
    crawler: Crawler, site: Site, author: str
) -> None:
    result, report = crawler.run("crawl", "--author", author, f"{site.base}/docs/x.html")
    assert result.returncode == 1
    assert report["published"] == []
    assert "--allow-private-networks" in report["failed"][0]["reason"]
    assert site.hits == {}  # refused before any request


def test_a_feed_listing_n_pages_yields_n_documents(
    crawler: Crawler, site: Site, author: str
) -> None:
    links = [f"/docs/{page.name}" for page in DOC_PAGES]
    site.page("/feed.xml", rss(site.base, links), kind="application/rss+xml")
    result, report, landed = crawler.crawl(author, f"{site.base}/feed.xml")
    assert result.returncode == 0, report
    assert len(landed) == len(links)
    # Each page fetched for its text; same ids as crawling the pages themselves.
    assert {d.source_url for d in landed if d} == {site.base + link for link in links}
    assert all(d and len(d.content) > 300 for d in landed)


def test_a_full_content_feed_is_read_without_fetching_pages(
    crawler: Crawler, site: Site, author: str
) -> None:
    body = "<p>Streams make failures visible.</p><p>Batch jobs hid them for a whole night.</p>"
    site.page(
        "/full.xml",
        rss(site.base, ["/posts/one"], full_content={"/posts/one": body}),
        kind="application/rss+xml",
    )
    result, report, landed = crawler.crawl(author, f"{site.base}/full.xml")
    assert result.returncode == 0, report
    (document,) = landed
    assert document is not None
    assert document.content == (
        "Streams make failures visible.\n\nBatch jobs hid them for a whole night."
    )
    assert document.title == "Entry 1"
    assert document.published_at is not None and document.published_at.day == 1
    assert site.hits["/posts/one"] == 0


def test_a_changed_page_is_a_new_version_and_etags_avoid_refetching(
    crawler: Crawler, site: Site, author: str
) -> None:
    page = (FIXTURES / "docs" / "qdrant-collections.html").read_text()
    site.page("/post.html", page)
    site.etag_of["/post.html"] = '"v1"'
    _, _first, (original,) = crawler.crawl(author, f"{site.base}/post.html")
    assert original is not None

    _, second, landed = crawler.crawl(author, f"{site.base}/post.html")
    assert landed == []
    assert second["unchanged"] == [str(original.document_id)]
    assert site.hits["/post.html"] == 2  # the second answer was a bodiless 304

    site.page("/post.html", page.replace("natural unit of isolation", "natural boundary"))
    site.etag_of["/post.html"] = '"v2"'
    _, _third, (changed,) = crawler.crawl(author, f"{site.base}/post.html")
    assert changed is not None
    assert changed.document_id == original.document_id
    assert changed.version != original.version
    assert "natural boundary" in changed.content


def test_forget_publishes_tombstones_and_a_recrawl_needs_force(
    crawler: Crawler, site: Site, author: str
) -> None:
    url = f"{site.base}/docs/{DOC_PAGES[2].name}"
    _, _, (document,) = crawler.crawl(author, url)
    assert document is not None

    start = topic_ends(crawler.bootstrap, TOPIC)
    result, report = crawler.run("forget", "--author", author)
    assert result.returncode == 0, result.stderr
    assert report["forgotten"] == [str(document.document_id)]
    (tombstone,) = read_topic(crawler.bootstrap, TOPIC, start, 1)
    assert tombstone.key() == str(document.document_id).encode()
    assert tombstone.value() is None
    assert dict(tombstone.headers() or []) == {"author": author.encode()}

    result, report, landed = crawler.crawl(author, url)
    assert result.returncode == 0
    assert report["forgotten"] == [str(document.document_id)]
    assert landed == []

    result, report, landed = crawler.crawl(author, url, flags=("--force",))
    assert [d.document_id for d in landed if d] == [document.document_id]


def test_forget_refuses_another_authors_document(crawler: Crawler, site: Site, author: str) -> None:
    _, _, (document,) = crawler.crawl(author, f"{site.base}/docs/{DOC_PAGES[0].name}")
    assert document is not None
    start = topic_ends(crawler.bootstrap, TOPIC)
    result = run_cli(
        crawler.home,
        "forget",
        "--author",
        "someone-else",
        "--document",
        str(document.document_id),
        **crawler.env,
    )
    assert result.returncode == 1
    assert "not documents of someone-else" in result.stderr
    read_topic(crawler.bootstrap, TOPIC, start, 0, settle_s=0.5)


def test_two_authors_crawling_one_page_get_separate_documents(
    crawler: Crawler, site: Site, author: str
) -> None:
    url = f"{site.base}/docs/{DOC_PAGES[0].name}"
    _, _, (mine,) = crawler.crawl(author, url)
    _, _, (theirs,) = crawler.crawl(author + "-b", url)
    assert mine and theirs
    assert mine.document_id != theirs.document_id


def test_no_stack_exits_3(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "crawl", "--author", "ada", "https://example.org/")
    assert result.returncode == 3
    assert "no stack: run `llm-twin infra up`" in result.stderr
