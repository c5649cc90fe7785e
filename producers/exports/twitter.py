"""An X/Twitter archive: one post per tweet in data/tweets.js and its part files.

Each file is JavaScript: ``window.YTD.tweets.part0 = [...]`` (``window.YTD.tweet.part0``
and ``data/tweet.js`` in archives from before 2020), the array holding ``{"tweet": {...}}``
objects (bare tweet objects in the oldest ones) with ``id_str``, ``full_text``,
``created_at`` ("Wed Oct 10 20:19:24 +0000 2018"), ``in_reply_to_status_id_str`` and
``entities``. ``full_text`` is HTML-escaped (``&amp;``) and carries t.co short links.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from pydantic import JsonValue

from producers.exports.archive import Archive, UnreadableFile
from producers.exports.normalize import headline, tidy
from producers.harvest import Failure, Harvest
from schemas.documents import Author, DocumentKind, RawDocument

PLATFORM = "x"
_TWEET_FILE = re.compile(r"^data/tweets?(?:-part(\d+))?\.js$")
_ASSIGNMENT = re.compile(r"^\s*window\.YTD\.\w+\.part\d+\s*=\s*")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_OFFSET = re.compile(r"^([+-])(\d\d)(\d\d)$")


def recognises(archive: Archive) -> bool:
    return bool(_tweet_files(archive))


def read_twitter(path: Path, author: Author, *, crawled_at: datetime) -> Harvest:
    try:
        archive = Archive.open(path)
    except UnreadableFile as error:
        return Harvest(failures=[Failure(str(path), str(error))])
    harvest = Harvest()
    with archive:
        names = _tweet_files(archive)
        if not names:
            harvest.fail(str(path), "no data/tweets.js: not an X/Twitter archive")
        for name in names:
            harvest.extend(_read_file(archive, name, author, crawled_at))
    return harvest


def _tweet_files(archive: Archive) -> list[str]:
    """data/tweets.js, data/tweets-part1.js, … in part order."""
    parts = {name: _TWEET_FILE.match(name) for name in archive.names}
    found = {name: int(match[1] or 0) for name, match in parts.items() if match}
    return sorted(found, key=lambda name: (found[name], name))


def _read_file(archive: Archive, name: str, author: Author, crawled_at: datetime) -> Harvest:
    harvest = Harvest()
    source = archive.source(name)
    try:
        script = archive.read_text(name)
    except UnreadableFile as error:
        harvest.fail(source, str(error))
        return harvest
    assignment = _ASSIGNMENT.match(script)
    if assignment is None:
        harvest.fail(source, "does not start with window.YTD.<name>.part<N> =")
        return harvest
    try:
        items = json.loads(script[assignment.end() :].strip().rstrip(";"))
    except json.JSONDecodeError as error:
        harvest.fail(source, f"not valid JSON after the window.YTD prefix: {error}")
        return harvest
    if not isinstance(items, list):
        harvest.fail(source, "not a JSON array after the window.YTD prefix")
        return harvest
    for number, item in enumerate(items, start=1):
        try:
            document = _tweet(item, author, crawled_at)
        except ValueError as error:
            harvest.fail(f"{source}#tweet {number}", str(error))
            continue
        if document is not None:
            harvest.documents.append(document)
    return harvest


def _tweet(item: object, author: Author, crawled_at: datetime) -> RawDocument | None:
    """The post for one archive entry; None for a retweet, which is someone else's words."""
    tweet = item.get("tweet", item) if isinstance(item, dict) else None
    if not isinstance(tweet, dict):
        raise ValueError("not a tweet object")
    tweet_id = tweet.get("id_str")
    if not isinstance(tweet_id, str) or not tweet_id.isdigit():
        raise ValueError("no id_str")
    full_text = tweet.get("full_text")
    if not isinstance(full_text, str):
        raise ValueError(f"tweet {tweet_id} has no full_text")
    if full_text.startswith("RT @"):
        return None
    created_at = tweet.get("created_at")
    if not isinstance(created_at, str):
        raise ValueError(f"tweet {tweet_id} has no created_at")
    text = tidy(html.unescape(_expand_links(full_text, tweet.get("entities"))))
    if not text:
        raise ValueError(f"tweet {tweet_id}: empty after extraction")
    reply_to = tweet.get("in_reply_to_status_id_str")
    metadata: dict[str, JsonValue] = {"tweet_id": tweet_id, "reply": bool(reply_to)}
    if isinstance(reply_to, str) and reply_to:
        metadata["in_reply_to"] = reply_to
    url = f"https://x.com/i/status/{tweet_id}"
    return RawDocument.build(
        author=author,
        kind=DocumentKind.POST,
        platform=PLATFORM,
        canonical_source=url,
        source_url=url,
        title=headline(text),
        content=text,
        published_at=_created_at(created_at),
        crawled_at=crawled_at,
        metadata=metadata,
    )


def _expand_links(text: str, entities: object) -> str:
    """t.co links replaced by where they lead; links to the tweet's own media removed."""
    if not isinstance(entities, dict):
        return text
    for link in _dicts(entities.get("urls")):
        short, expanded = link.get("url"), link.get("expanded_url")
        if isinstance(short, str) and short and isinstance(expanded, str):
            text = text.replace(short, expanded)
    # A media link points at the photo attached to this very tweet: not words.
    for media in _dicts(entities.get("media")):
        short = media.get("url")
        if isinstance(short, str) and short:
            text = text.replace(short, "")
    return text


def _dicts(value: object) -> list[dict[str, object]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _created_at(value: str) -> datetime:
    """Twitter's "Wed Oct 10 20:19:24 +0000 2018", read without strptime.

    strptime's %a and %b follow the process locale, so a German locale would reject "Oct".
    """
    fields = value.split()
    try:
        _weekday, month, day, clock, offset, year = fields
        hours, minutes, seconds = (int(part) for part in clock.split(":"))
        sign, offset_hours, offset_minutes = _OFFSET.findall(offset)[0]
        shift = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = timezone(-shift if sign == "-" else shift)
        moment = datetime(
            int(year), _MONTHS.index(month) + 1, int(day), hours, minutes, seconds, tzinfo=zone
        )
    except (ValueError, IndexError):
        raise ValueError(f"unreadable created_at {value!r}") from None
    return moment.astimezone(UTC)
