"""``llm-twin crawl`` and ``forget`` against a real HTTP server, the real broker and warehouse.

What lands on ``twin.raw-documents`` is checked by consuming it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import localstack
from schemas import serde
from schemas.documents import RawDocument
from schemas.ids import canonical_url, document_id
from schemas.topics import RAW_DOCUMENTS
from tests.producers.site import DOC_PAGES, FIXTURES, Site, rss, serve, serve_git
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


TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def served_repository(root: Path) -> Path:
    """A folder holding one bare repository, ``notes.git``, with one committed file."""
    work = root / "work"
    work.mkdir(parents=True)
    identity = ["-c", "user.name=Ada", "-c", "user.email=ada@example.org"]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "README.md"],
        ["commit", "-q", "-m", "first"],
        ["clone", "-q", "--bare", str(work), str(root / "served" / "notes.git")],
    ):
        if args[0] == "add":
            (work / "README.md").write_text("# Notes\n\nWhat I learned about Kafka this year.\n")
        subprocess.run(["git", *identity, *args], cwd=work, check=True, capture_output=True)
    return root / "served"


def test_crawl_clones_from_this_machine_only_when_allowed_and_never_shows_a_token(
    crawler: Crawler, author: str, tmp_path: Path
) -> None:
    served = served_repository(tmp_path / "git")
    with serve_git(served) as (port, hosts):
        local = f"http://127.0.0.1:{port}/notes.git"
        refused = {
            local: "loopback (127.0.0.0/8)",
            (served / "notes.git").as_uri(): "`llm-twin import PATH` reads a local repository",
            f"https://{TOKEN}@127.0.0.1:1/team/proj.git": "loopback (127.0.0.0/8)",
        }
        result, report = crawler.run("crawl", "--author", author, *refused)
        assert hosts == []  # refused before git ran
        allowed, _, landed = crawler.crawl(author, local)  # --allow-private-networks

    assert result.returncode == 1
    assert report["published"] == []
    reasons = {failure["source"]: failure["reason"] for failure in report["failed"]}
    shown = {url.replace(TOKEN, "***"): expected for url, expected in refused.items()}
    assert set(reasons) == set(shown)
    for source, expected in shown.items():
        assert expected in reasons[source], (source, reasons[source])
    assert TOKEN not in result.stdout + result.stderr
    assert allowed.returncode == 0
    assert [d.title for d in landed if d is not None] == ["README.md"]
    assert set(hosts) == {f"127.0.0.1:{port}"}


def test_crawl_clones_over_http_only(crawler: Crawler, author: str, tmp_path: Path) -> None:
    # Refused for their scheme, before any name is looked up: no packet leaves.
    refused = {
        "git://10.0.0.1/x": "not git",
        "ssh://internal/x": "not ssh",
        "git@internal:team/x.git": "not ssh",
        str(tmp_path / "x.git"): "a local path",
    }
    result, report = crawler.run("crawl", "--author", author, *refused)

    assert result.returncode == 1
    reasons = {failure["source"]: failure["reason"] for failure in report["failed"]}
    assert set(reasons) == set(refused)
    for url, expected in refused.items():
        assert expected in reasons[url], (url, reasons[url])
    assert not (crawler.home / "repositories").exists() or not any(
        (crawler.home / "repositories").iterdir()
    )


# Run inside a network namespace with only loopback up: "rebind.example" answers a public
# address to the first lookup and loopback to every later one, as a rebinding server does.
REBINDING = """
import asyncio, json, socket
from producers.fetch import HTML_TYPES, Fetcher, FetchError, FetchPolicy
from tests.producers.site import DOC_PAGES, serve

real, lookups = socket.getaddrinfo, []

def rebinding(host, port, *args, **kwargs):
    if (host.decode() if isinstance(host, bytes) else host) != "rebind.example":
        return real(host, port, *args, **kwargs)
    lookups.append(host)
    return real("93.184.216.34" if len(lookups) == 1 else "127.0.0.1", port, *args, **kwargs)

socket.getaddrinfo = rebinding
policy = FetchPolicy(per_host_delay_s=0, retries=0, respect_robots_txt=False, total_timeout_s=3)

async def fetch(url):
    async with Fetcher(policy) as fetcher:
        try:
            return (await fetcher.fetch(url, accept=HTML_TYPES)).url
        except FetchError as error:
            return error.reason

with serve() as site:
    port = site.base.rpartition(":")[2]
    outcome = asyncio.run(fetch(f"http://rebind.example:{port}/docs/{DOC_PAGES[0].name}"))
    print(json.dumps({"outcome": outcome, "hits": sum(site.hits.values())}))
"""


def _loopback_only_namespace() -> list[str]:
    command = ["unshare", "--user", "--map-root-user", "--net", "sh", "-c"]
    probe = [*command, "ip link set lo up"]
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip for a network namespace of the test's own")
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        pytest.skip("user namespaces are not available here")
    return [*command, f"ip link set lo up && exec {sys.executable} -"]


def test_a_name_that_rebinds_after_the_check_is_never_fetched() -> None:
    result = subprocess.run(
        _loopback_only_namespace(),
        input=REBINDING,
        capture_output=True,
        text=True,
        cwd=REPOSITORY_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPOSITORY_ROOT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["hits"] == 0  # the loopback server behind the second answer saw nothing
    assert "127.0.0.1 (loopback (127.0.0.0/8))" in answer["outcome"]


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
