"""Importers for a person's own data exports, against realistic exports built in tmp_path."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producers.exports import Reader, detect, read_export
from producers.exports.linkedin import read_linkedin
from producers.exports.medium import read_medium
from producers.exports.notes import read_notes
from producers.exports.substack import read_substack
from producers.exports.twitter import read_twitter
from producers.harvest import Failure, Harvest
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.ids import canonical_url, document_id

AUTHOR = Author(slug="ada", display_name="Ada Lovelace")
CRAWLED_AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8", newline="")
    return root


def zipped(folder: Path, top: str | None = None) -> Path:
    """The folder as a zip beside it, its files optionally wrapped in one ``top`` folder."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = file.relative_to(folder).as_posix()
            zip_file.write(file, f"{top}/{name}" if top else name)
    return archive


def by_source(harvest: Harvest) -> dict[str, RawDocument]:
    return {document.canonical_source: document for document in harvest.documents}


def identities(harvest: Harvest) -> list[tuple[str, str]]:
    return sorted((str(d.document_id), d.content_hash) for d in harvest.documents)


def read(reader: Reader, path: Path) -> Harvest:
    return Harvest.of(reader(path, AUTHOR, crawled_at=CRAWLED_AT))


# --- LinkedIn ---------------------------------------------------------------------------

SHARE = "https://www.linkedin.com/feed/update/urn%3Ali%3Ashare%3A7061234567890123456"
LINKEDIN_SHARES = (
    "Date,ShareLink,ShareCommentary,SharedUrl,MediaUrl,Visibility\n"
    # row 2: a quoted multi-line post with doubled quotes, decomposed (NFD) accents
    f"2023-05-04 10:12:55,{SHARE}?utm_source=share&utm_medium=member_desktop,"
    '"Why we moved ingestion to Kafka.\n\n'
    'Batch jobs hid our failures; as Grace said, ""streams make them visible"".\n\n'
    'Cafe\u0301 conversations ✓",https://example.org/kafka,,MEMBER_NETWORK\n'
    # row 3: a repost with no words of her own
    "2023-06-01 08:00:00,https://www.linkedin.com/feed/update/urn%3Ali%3Ashare%3A7070,"
    ",https://example.org/someone-elses-post,,MEMBER_NETWORK\n"
    # row 4: LinkedIn's own way of writing a multi-line post, every line in quotes
    "2023-07-02 09:30:00,https://www.linkedin.com/feed/update/urn%3Ali%3AugcPost%3A7080,"
    '"Three lessons from on-call week""\n""""\n""1. Page less""\n""2. Write runbooks",,,PUBLIC\n'
    # row 5: no ShareLink
    '2023-08-03 12:00:00,,"A post whose link the export lost.",,,PUBLIC\n'
    # row 6: cut short
    "2023-09-04 07:45:00,https://www.linkedin.com/feed/update/urn%3Ali%3Ashare%3A7090\n"
    # row 7: an unreadable date
    "yesterday,https://www.linkedin.com/feed/update/urn%3Ali%3Ashare%3A7100,"
    '"Good words, bad date.",,,PUBLIC\n'
    # row 8: still read after the broken rows; its zone spelled out
    "2023-11-06 16:20:00 UTC,https://www.linkedin.com/feed/update/urn%3Ali%3Ashare%3A7110,"
    '"Still read after the broken rows.",,,PUBLIC\n'
)
LINKEDIN_ARTICLE = """<html>
<head><title>The cost of reliability</title><style>h1 { font-size: 42px; }</style></head>
<body>
  <h1><a href="https://www.linkedin.com/pulse/the-cost-of-reliability-ada-lovelace">The cost of
  reliability</a></h1>
  <p class="created">Created on 2024-09-20 06:04</p>
  <p class="published">Published on 2024-09-20 06:12</p>
  <div>
    <p>Reliability is a property of the system, not a feature you add later.</p>
    <ul><li><p><strong>Refactoring:</strong> pay back the debt.</p></li>
        <li><p><strong>Tooling:</strong> it has a cost too.</p></li></ul>
    <p>Naïve retries make outages longer.</p>
  </div>
</body>
</html>
"""
LINKEDIN_DRAFT = """<html><head><title>On naming</title></head><body>
<h1>On naming</h1>
<p class="created">Created on 2025-01-02 10:00</p>
<div><p>Names are the first documentation a reader meets.</p></div>
</body></html>
"""


def linkedin_export(root: Path) -> Path:
    return write(
        root,
        {
            "Shares.csv": LINKEDIN_SHARES,
            "Connections.csv": "First Name,Last Name\nGrace,Hopper\n",
            "Articles/Articles/the-cost-of-reliability.html": LINKEDIN_ARTICLE,
            "Articles/Articles/on-naming.html": LINKEDIN_DRAFT,
            "Articles/Articles/garbled.html": b"<html><body><h1>\xff\xfe broken</h1></body></html>",
        },
    )


def test_linkedin_export_zip_wrapped_in_a_top_folder(tmp_path: Path) -> None:
    archive = zipped(linkedin_export(tmp_path / "export"), top="Basic_LinkedInDataExport_05-04")

    harvest = read(read_linkedin, archive)

    posts = by_source(harvest)
    assert len(harvest.documents) == 6  # 4 shares + 2 articles
    first = posts[canonical_url(SHARE)]
    assert first.kind is DocumentKind.POST
    assert first.platform == "linkedin"
    assert first.content == (
        "Why we moved ingestion to Kafka.\n\n"
        'Batch jobs hid our failures; as Grace said, "streams make them visible".\n\n'
        "Café conversations ✓"
    )
    assert first.title == "Why we moved ingestion to Kafka."
    assert first.published_at == datetime(2023, 5, 4, 10, 12, 55, tzinfo=UTC)
    assert first.source_url == f"{SHARE}?utm_source=share&utm_medium=member_desktop"
    assert first.metadata == {
        "shared_url": "https://example.org/kafka",
        "visibility": "MEMBER_NETWORK",
    }

    quoted_lines = posts["https://www.linkedin.com/feed/update/urn:li:ugcPost:7080"]
    assert (
        quoted_lines.content == "Three lessons from on-call week\n\n1. Page less\n2. Write runbooks"
    )

    linkless = [d for d in harvest.documents if d.canonical_source.startswith("linkedin-share:")]
    assert [d.content for d in linkless] == ["A post whose link the export lost."]
    assert linkless[0].source_url is None
    assert linkless[0].canonical_source.startswith("linkedin-share:2023-08-03 12:00:00:")

    article = posts["linkedin-article:the-cost-of-reliability.html"]
    assert article.kind is DocumentKind.ARTICLE
    assert article.title == "The cost of reliability"
    assert (
        article.source_url == "https://www.linkedin.com/pulse/the-cost-of-reliability-ada-lovelace"
    )
    assert article.published_at == datetime(2024, 9, 20, 6, 12, tzinfo=UTC)
    assert article.content.startswith("Reliability is a property of the system")
    assert "Naïve retries make outages longer." in article.content
    assert "Created on" not in article.content and "font-size" not in article.content
    draft = posts["linkedin-article:on-naming.html"]
    assert draft.published_at is None
    assert draft.metadata == {"published": False, "created_at": "2025-01-02T10:00:00+00:00"}

    shares = f"{archive}:Basic_LinkedInDataExport_05-04/Shares.csv"
    failures = {f.source: f.reason for f in harvest.failures}
    assert set(failures) == {
        f"{shares}#row 6",
        f"{shares}#row 7",
        f"{archive}:Basic_LinkedInDataExport_05-04/Articles/Articles/garbled.html",
    }
    assert "missing ShareCommentary" in failures[f"{shares}#row 6"]
    assert "'yesterday'" in failures[f"{shares}#row 7"]
    last = posts["https://www.linkedin.com/feed/update/urn:li:share:7110"]
    assert last.content == "Still read after the broken rows."
    assert last.published_at == datetime(2023, 11, 6, 16, 20, tzinfo=UTC)


def test_linkedin_folder_and_zip_yield_the_same_documents(tmp_path: Path) -> None:
    folder = linkedin_export(tmp_path / "export")

    from_folder = read(read_linkedin, folder)
    from_zip = read(read_linkedin, zipped(folder, top="Top"))

    assert identities(from_folder) == identities(from_zip)
    assert len(from_folder.failures) == 3
    assert f"{folder / 'Shares.csv'}#row 6" in {f.source for f in from_folder.failures}


def test_linkedin_share_source_is_the_canonical_url_a_crawler_would_compute(
    tmp_path: Path,
) -> None:
    harvest = read(read_linkedin, linkedin_export(tmp_path / "export"))

    first = min(harvest.documents, key=lambda d: d.published_at or CRAWLED_AT)
    # The export escapes the share's URN; the page's own URL does not: one document.
    unescaped = SHARE.replace("%3A", ":")
    assert first.canonical_source == canonical_url(SHARE) == unescaped
    assert first.document_id == document_id("ada", canonical_url(unescaped))


# --- X / Twitter ------------------------------------------------------------------------

TWEETS = """window.YTD.tweets.part0 = [
  {
    "tweet" : {
      "id_str" : "1050118621198921728",
      "full_text" : "Streams beat batch &amp; here is why: https://t.co/AbCdEf1234",
      "created_at" : "Wed Oct 10 20:19:24 +0000 2018",
      "entities" : {
        "urls" : [ {
          "url" : "https://t.co/AbCdEf1234",
          "expanded_url" : "https://example.org/streams",
          "display_url" : "example.org/streams"
        } ]
      }
    }
  },
  {
    "tweet" : {
      "id_str" : "1050300000000000002",
      "full_text" : "@grace Agreed — café talk tomorrow?",
      "created_at" : "Thu Oct 11 08:00:00 +0000 2018",
      "in_reply_to_status_id_str" : "1050200000000000001",
      "entities" : { "urls" : [ ] }
    }
  },
  {
    "tweet" : {
      "id_str" : "1050400000000000003",
      "created_at" : "Fri Oct 12 08:00:00 +0000 2018"
    }
  },
  {
    "tweet" : {
      "id_str" : "1050500000000000004",
      "full_text" : "RT @grace: Someone else's words",
      "created_at" : "Sat Oct 13 08:00:00 +0000 2018"
    }
  },
  {
    "tweet" : {
      "id_str" : "1050600000000000005",
      "full_text" : "Our new lag dashboard https://t.co/Media12345",
      "created_at" : "Sun Oct 14 08:00:00 +0000 2018",
      "entities" : {
        "media" : [ {
          "url" : "https://t.co/Media12345",
          "expanded_url" : "https://x.com/ada/status/1050600000000000005/photo/1"
        } ]
      }
    }
  }
]"""
TWEETS_PART1 = """window.YTD.tweets.part1 = [ {
  "tweet" : {
    "id_str" : "1609870000000000006",
    "full_text" : "New year, same lesson:\\n\\nidempotent sinks &gt; exactly-once promises.",
    "created_at" : "Mon Jan 02 09:00:00 +0100 2023"
  }
} ]"""


def twitter_archive(root: Path, tweets: str = TWEETS) -> Path:
    return write(
        root,
        {
            "Your archive.html": "<html></html>",
            "data/tweets.js": tweets,
            "data/tweets-part1.js": TWEETS_PART1,
            "data/like.js": 'window.YTD.like.part0 = [ { "like" : { "tweetId" : "1" } } ]',
        },
    )


def test_twitter_archive(tmp_path: Path) -> None:
    harvest = read(read_twitter, zipped(twitter_archive(tmp_path / "twitter-2023")))

    posts = by_source(harvest)
    assert sorted(posts) == [
        "https://x.com/i/status/1050118621198921728",
        "https://x.com/i/status/1050300000000000002",
        "https://x.com/i/status/1050600000000000005",
        "https://x.com/i/status/1609870000000000006",
    ]  # the retweet is skipped
    first = posts["https://x.com/i/status/1050118621198921728"]
    assert first.content == "Streams beat batch & here is why: https://example.org/streams"
    assert first.kind is DocumentKind.POST
    assert first.platform == "x"
    assert first.source_url == first.canonical_source
    assert first.published_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert first.metadata == {"tweet_id": "1050118621198921728", "reply": False}
    reply = posts["https://x.com/i/status/1050300000000000002"]
    assert reply.metadata == {
        "tweet_id": "1050300000000000002",
        "reply": True,
        "in_reply_to": "1050200000000000001",
    }
    assert posts["https://x.com/i/status/1050600000000000005"].content == "Our new lag dashboard"
    later = posts["https://x.com/i/status/1609870000000000006"]
    assert later.content == "New year, same lesson:\n\nidempotent sinks > exactly-once promises."
    assert later.published_at == datetime(2023, 1, 2, 8, 0, tzinfo=UTC)

    assert [(f.source.rsplit(":", 1)[-1], f.reason) for f in harvest.failures] == [
        ("data/tweets.js#tweet 3", "tweet 1050400000000000003 has no full_text")
    ]


def test_twitter_file_that_is_not_json_fails_alone(tmp_path: Path) -> None:
    folder = twitter_archive(
        tmp_path / "archive", tweets='window.YTD.tweets.part0 = [ { "tweet" : {'
    )

    harvest = read(read_twitter, folder)

    assert [d.canonical_source for d in harvest.documents] == [
        "https://x.com/i/status/1609870000000000006"
    ]
    [failure] = harvest.failures
    assert failure.source == str(folder / "data" / "tweets.js")
    assert failure.reason.startswith("not valid JSON after the window.YTD prefix")


def test_twitter_archive_from_before_2020(tmp_path: Path) -> None:
    old = """window.YTD.tweet.part0 = [ {
      "id_str" : "42", "full_text" : "just setting up my twttr",
      "created_at" : "Tue Mar 21 20:50:14 +0000 2006"
    } ]"""
    folder = write(tmp_path / "old", {"data/tweet.js": old})

    [document] = read(read_twitter, folder).documents

    assert document.content == "just setting up my twttr"
    assert document.published_at == datetime(2006, 3, 21, 20, 50, 14, tzinfo=UTC)


# --- Medium -----------------------------------------------------------------------------

MEDIUM_CANONICAL = "https://medium.com/@ada/why-we-moved-ingestion-to-kafka-18504ab0fd0e"


def medium_post(title: str, body: str, canonical: str | None) -> str:
    link = f'<a href="{canonical}" class="p-canonical">Canonical link</a>' if canonical else ""
    return f"""<!DOCTYPE html><html><head><meta http-equiv="Content-Type"
content="text/html; charset=utf-8"><title>{title}</title><style>
body {{ font-size: 20px; }}</style></head><body><article class="h-entry">
<header><h1 class="p-name">{title}</h1></header>
<section data-field="subtitle" class="p-summary">What the failures taught us</section>
<section data-field="body" class="e-content">
<section name="d975" class="section section--body section--first section--last">
<div class="section-divider"><hr class="section-divider"></div>
<div class="section-content"><div class="section-inner sectionLayout--insetColumn">
<h3 name="5d67" id="5d67" class="graf graf--h3 graf--leading graf--title">{title}</h3>
{body}
</div></div></section>
</section>
<footer><p>By <a href="https://medium.com/@ada" class="p-author h-card">Ada Lovelace</a> on
<a href="https://medium.com/p/18504ab0fd0e"><time class="dt-published"
datetime="2019-04-22T14:16:50.592Z">April 22, 2019</time></a>.</p>
<p>{link}</p>
<p>Exported from <a href="https://medium.com">Medium</a> on November 29, 2026.</p>
</footer></article></body></html>
"""


def medium_export(root: Path) -> Path:
    body = (
        '<p name="391f" class="graf graf--p graf-after--h3">Batch jobs hid our failures.</p>\n'
        '<p name="7202" class="graf graf--p graf-after--p">Streams made them visible: '
        "ünïcode ✓.</p>"
    )
    return write(
        root,
        {
            "README.html": "<html><body>Your Medium export</body></html>",
            "profile/profile.html": "<html><body><h3>Ada</h3></body></html>",
            "posts/2019-04-22_Why-we-moved-ingestion-to-Kafka-18504ab0fd0e.html": medium_post(
                "Why we moved ingestion to Kafka",
                body,
                # Tracking parameters, a fragment and upper case: all gone from the id.
                "https://Medium.com/@ada/why-we-moved-ingestion-to-kafka-18504ab0fd0e"
                "?utm_source=export&utm_medium=rss#top",
            ),
            "posts/draft_Unfinished-thoughts-abc123def456.html": medium_post(
                "Unfinished thoughts", "<p>Not yet.</p>", "https://medium.com/p/abc123def456"
            ),
            "posts/2020-01-01_No-link-111111111111.html": medium_post(
                "No link", "<p>Orphaned.</p>", None
            ),
            "posts/2020-02-02_Garbled-222222222222.html": b"\xff<html>\xc3\x28</html>",
        },
    )


def test_medium_export(tmp_path: Path) -> None:
    folder = medium_export(tmp_path / "medium-export")

    harvest = read(read_medium, folder)

    [post] = harvest.documents  # the draft is skipped
    assert post.kind is DocumentKind.ARTICLE
    assert post.platform == "medium"
    assert post.title == "Why we moved ingestion to Kafka"
    assert post.content == "Batch jobs hid our failures.\n\nStreams made them visible: ünïcode ✓."
    assert post.published_at == datetime(2019, 4, 22, 14, 16, 50, 592000, tzinfo=UTC)
    assert post.canonical_source == MEDIUM_CANONICAL
    assert post.source_url is not None and post.source_url.startswith("https://Medium.com/@ada/")
    assert post.metadata == {"subtitle": "What the failures taught us"}
    # A later crawl of the post's URL lands on the same document.
    assert post.document_id == document_id("ada", canonical_url(MEDIUM_CANONICAL))

    failures = {f.source: f.reason for f in harvest.failures}
    no_link = str(folder / "posts/2020-01-01_No-link-111111111111.html")
    garbled = str(folder / "posts/2020-02-02_Garbled-222222222222.html")
    assert set(failures) == {no_link, garbled}
    assert failures[no_link] == "no p-canonical link"
    assert failures[garbled].startswith("not UTF-8 text")


# --- Substack ---------------------------------------------------------------------------

SUBSTACK_POSTS = (
    "post_id,post_date,is_published,email_sent_at,inbox_sent_at,type,audience,title,subtitle,"
    "podcast_url\n"
    "101.why-streams,2024-03-01T08:00:00.000Z,true,2024-03-01T08:00:00.000Z,,newsletter,"
    'everyone,"Why streams, not batches",Failures you can see,\n'
    "102.a-draft,,false,,,newsletter,everyone,A draft,,\n"
    "103.paid-only,2024-04-01T08:00:00.000Z,true,,,newsletter,only_paid,"
    '"Notes on ""effectively once""",,\n'
    "104.lost-body,2024-05-01T08:00:00.000Z,true,,,newsletter,everyone,Lost body,,\n"
    "105.unsure,2024-06-01T08:00:00.000Z,maybe,,,newsletter,everyone,Unsure,,\n"
)


def substack_export(root: Path) -> Path:
    return write(
        root,
        {
            "posts.csv": SUBSTACK_POSTS,
            "email_list.ada.csv": "email,active_subscription\ngrace@example.org,true\n",
            "posts/101.why-streams.html": (
                "<p>Batch jobs hid our failures.</p><h2>What changed</h2>"
                "<p>Streams made them <em>visible</em>.</p>"
            ),
            "posts/102.a-draft.html": "<p>Not ready.</p>",
            "posts/103.paid-only.html": "<p>Idempotent sinks, always.</p>",
        },
    )


def test_substack_export(tmp_path: Path) -> None:
    archive = zipped(substack_export(tmp_path / "substack"))

    harvest = read(read_substack, archive)

    posts = by_source(harvest)
    assert sorted(posts) == ["substack-export:101.why-streams", "substack-export:103.paid-only"]
    first = posts["substack-export:101.why-streams"]
    assert first.kind is DocumentKind.ARTICLE
    assert first.platform == "substack"
    assert first.title == "Why streams, not batches"
    assert (
        first.content
        == "Batch jobs hid our failures.\n\n## What changed\n\nStreams made them *visible*."
    )
    assert first.published_at == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert first.metadata == {
        "subtitle": "Failures you can see",
        "audience": "everyone",
        "type": "newsletter",
    }
    assert posts["substack-export:103.paid-only"].title == 'Notes on "effectively once"'
    assert posts["substack-export:103.paid-only"].metadata["audience"] == "only_paid"

    failures = {f.source: f.reason for f in harvest.failures}
    assert set(failures) == {f"{archive}:posts.csv#row 5", f"{archive}:posts.csv#row 6"}
    assert "posts/104.lost-body.html is missing" in failures[f"{archive}:posts.csv#row 5"]
    assert "'maybe'" in failures[f"{archive}:posts.csv#row 6"]


# --- Notes ------------------------------------------------------------------------------


def notes_folder(root: Path) -> Path:
    return write(
        root,
        {
            "kafka.md": (
                "---\n"
                "title: Why we moved ingestion to Kafka\n"
                "date: 2024-02-03\n"
                "tags: [kafka, streams]\n"
                "canonical_url: https://Blog.example.org/kafka/?utm_source=rss\n"
                "---\n\n"
                "Batch jobs hid our failures.\n\n\n\nStreams made them visible.\n"
            ),
            "ideas/naming.markdown": (
                "```sh\n# not a heading\n```\n\n# On naming things\n\nNames are documentation.\n"
            ),
            "journal/2024-01-01.txt": (
                "New year, new notes.\r\n\r\nSecond paragraph, Cafe\u0301.\r\n"
            ),
            ".obsidian/workspace.md": "# hidden\n",
            "draft.md": "---\ndraft: true\n---\nNot yet.\n",
            "unpublished.md": "---\npublished: false\n---\nNot yet either.\n",
            "broken.md": "---\ntitle: [unclosed\n---\nText.\n",
            "empty.md": "---\ntitle: Only a title\n---\n\n",
            "photo.png": b"\x89PNG\r\n",
        },
    )


def test_notes_folder(tmp_path: Path) -> None:
    folder = notes_folder(tmp_path / "notes")

    harvest = read(read_notes, folder)

    notes = by_source(harvest)
    origin = str(folder.resolve())
    assert sorted(notes) == [
        "https://blog.example.org/kafka/",
        f"note:{origin}#ideas/naming.markdown",
        f"note:{origin}#journal/2024-01-01.txt",
    ]
    kafka = notes["https://blog.example.org/kafka/"]
    assert kafka.kind is DocumentKind.NOTE
    assert kafka.platform == "notes"
    assert kafka.title == "Why we moved ingestion to Kafka"
    assert kafka.content == "Batch jobs hid our failures.\n\nStreams made them visible."
    assert kafka.published_at == datetime(2024, 2, 3, tzinfo=UTC)
    assert kafka.source_url == "https://Blog.example.org/kafka/?utm_source=rss"
    # Its own URL is its identity: nothing older to supersede.
    assert kafka.metadata == {"path": "kafka.md", "import": origin, "tags": ["kafka", "streams"]}
    naming = notes[f"note:{origin}#ideas/naming.markdown"]
    assert naming.metadata["supersedes"] == "note:ideas/naming.markdown"
    assert naming.title == "On naming things"
    assert naming.content.startswith("```sh\n# not a heading\n```\n\n# On naming things")
    journal = notes[f"note:{origin}#journal/2024-01-01.txt"]
    assert journal.title == "2024-01-01"
    assert journal.content == "New year, new notes.\n\nSecond paragraph, Café."
    assert journal.published_at is None

    failures = {f.source: f.reason for f in harvest.failures}
    assert set(failures) == {str(folder / "broken.md"), str(folder / "empty.md")}
    assert failures[str(folder / "broken.md")].startswith("invalid front matter YAML")
    assert failures[str(folder / "empty.md")] == "empty after extraction"


def test_a_single_note_file(tmp_path: Path) -> None:
    folder = notes_folder(tmp_path / "notes")

    [note] = read(read_notes, folder / "kafka.md").documents

    assert note.canonical_source == "https://blog.example.org/kafka/"
    assert note.metadata["path"] == "kafka.md"


def test_a_note_is_the_same_document_read_alone_or_with_its_folder(tmp_path: Path) -> None:
    folder = notes_folder(tmp_path / "notes")
    [alone] = read(read_notes, folder / "ideas" / "naming.markdown").documents
    in_folder = read(read_notes, folder / "ideas").documents
    assert [d.document_id for d in in_folder] == [alone.document_id]


def test_two_folders_holding_the_same_file_names_are_different_documents(tmp_path: Path) -> None:
    for name in ("blog", "journal"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.md").write_text(f"# {name}\n\nThe {name}'s own words.\n")
    [blog] = read(read_notes, tmp_path / "blog").documents
    [journal] = read(read_notes, tmp_path / "journal").documents
    assert blog.document_id != journal.document_id
    # Both were one document before imports had an identity: both name it, to replace it.
    assert blog.metadata["supersedes"] == journal.metadata["supersedes"] == "note:index.md"


def test_a_file_named_like_another_notes_identity_supersedes_nothing(tmp_path: Path) -> None:
    """A name like blog#index.md was never an old identity: note:blog#index.md is the identity
    of index.md in the import named "blog" today, and must not be forgotten by this file."""
    (tmp_path / "crafted").mkdir()
    (tmp_path / "crafted" / "blog#index.md").write_text("# Crafted\n\nWords.\n")
    [crafted] = read(read_notes, tmp_path / "crafted").documents
    assert "supersedes" not in crafted.metadata


def test_a_named_import_keeps_its_identity_when_the_folder_moves(tmp_path: Path) -> None:
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "index.md").write_text("# Blog\n\nWords.\n")
    first = list(read_notes(tmp_path / "blog", AUTHOR, crawled_at=CRAWLED_AT, origin="my blog"))
    (tmp_path / "blog").rename(tmp_path / "moved")
    again = list(read_notes(tmp_path / "moved", AUTHOR, crawled_at=CRAWLED_AT, origin="my blog"))
    unnamed = list(read_notes(tmp_path / "moved", AUTHOR, crawled_at=CRAWLED_AT))
    assert isinstance(first[0], RawDocument) and isinstance(again[0], RawDocument)
    assert isinstance(unnamed[0], RawDocument)
    assert first[0].document_id == again[0].document_id
    assert first[0].canonical_source == "note:my blog#index.md"
    assert unnamed[0].document_id != first[0].document_id


# --- Stable ids, bad input, routing -----------------------------------------------------

BUILDERS: dict[str, tuple[Callable[[Path], Path], Reader]] = {
    "linkedin": (linkedin_export, read_linkedin),
    "twitter": (twitter_archive, read_twitter),
    "medium": (medium_export, read_medium),
    "substack": (substack_export, read_substack),
    "notes": (notes_folder, read_notes),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_reading_twice_yields_the_same_ids_and_versions(tmp_path: Path, name: str) -> None:
    build, reader = BUILDERS[name]
    folder = build(tmp_path / name)

    first, second = read(reader, folder), read(reader, folder)

    assert first.documents
    assert identities(first) == identities(second)
    assert all(
        d.published_at is None or d.published_at.utcoffset() == timedelta(0)
        for d in first.documents
    )


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_detect_routes_each_export_to_its_reader(tmp_path: Path, name: str, as_zip: bool) -> None:
    build, reader = BUILDERS[name]
    folder = build(tmp_path / name)
    path = zipped(folder, top="download") if as_zip else folder

    assert detect(path) is reader
    assert identities(read_export(path, AUTHOR, crawled_at=CRAWLED_AT)) == identities(
        read(reader, path)
    )


def test_detect_a_single_note_file(tmp_path: Path) -> None:
    note = write(tmp_path, {"idea.txt": "An idea."}) / "idea.txt"

    assert detect(note) is read_notes


def test_unrecognised_export_fails_naming_the_path(tmp_path: Path) -> None:
    folder = write(tmp_path / "photos", {"holiday.jpg": b"\xff\xd8\xff"})

    harvest = read_export(folder, AUTHOR, crawled_at=CRAWLED_AT)

    assert detect(folder) is None
    assert harvest.documents == []
    [failure] = harvest.failures
    assert failure.source == str(folder)
    assert failure.reason.startswith("not a recognised export")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file or folder"),
        (b"PK\x03\x04 not really a zip", "neither a folder nor a zip file"),
    ],
    ids=["missing", "corrupt-zip"],
)
def test_an_export_that_cannot_be_read_is_one_failure(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "export.zip"
    if content is not None:
        path.write_bytes(content)

    assert read_export(path, AUTHOR, crawled_at=CRAWLED_AT).failures == [Failure(str(path), reason)]
    assert read(read_linkedin, path).failures == [Failure(str(path), reason)]


def test_a_reader_given_another_export_says_so(tmp_path: Path) -> None:
    folder = substack_export(tmp_path / "substack")

    harvest = read(read_twitter, folder)

    assert harvest.documents == []
    assert harvest.failures == [Failure(str(folder), "no data/tweets.js: not an X/Twitter archive")]


def test_a_csv_whose_header_lacks_the_columns_is_reported(tmp_path: Path) -> None:
    folder = write(tmp_path / "linkedin", {"Shares.csv": "Date,Link\n2023-01-01,x\n"})

    harvest = read(read_linkedin, folder)

    assert harvest.documents == []
    assert harvest.failures == [
        Failure(
            f"{folder / 'Shares.csv'}#row 1", "header lacks column(s) ShareLink, ShareCommentary"
        )
    ]


def test_an_html_body_with_no_text_is_a_failure_not_a_document(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "substack",
        {
            "posts.csv": "post_id,post_date,is_published,title\n"
            "7.picture,2024-01-01T00:00:00Z,true,A picture\n",
            "posts/7.picture.html": '<div><img src="https://example.org/p.png"></div>',
        },
    )

    harvest = read(read_substack, folder)

    assert harvest.documents == []
    assert harvest.failures == [
        Failure(f"{folder / 'posts.csv'}#row 2", "post 7.picture: empty after extraction")
    ]


def test_a_zip_made_on_a_mac_ignores_its_resource_forks(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("Export/Shares.csv", LINKEDIN_SHARES)
        zip_file.writestr("__MACOSX/Export/._Shares.csv", b"\x00\x05\x16\x07Mac OS X")
        zip_file.writestr("Export/.DS_Store", b"\x00\x00\x00\x01Bud1")

    harvest = read_export(archive, AUTHOR, crawled_at=CRAWLED_AT)

    assert len(harvest.documents) == 4
    assert {f.source for f in harvest.failures} == {
        f"{archive}:Export/Shares.csv#row 6",
        f"{archive}:Export/Shares.csv#row 7",
    }
