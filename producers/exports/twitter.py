"""An X/Twitter archive: one post per tweet in data/tweets.js and its part files.

Each file is JavaScript: ``window.YTD.tweets.part0 = [...]`` (``window.YTD.tweet.part0``
and ``data/tweet.js`` in archives from before 2020), the array holding ``{"tweet": {...}}``
objects (bare tweet objects in the oldest ones) with ``id_str``, ``full_text``,
``created_at`` ("Wed Oct 10 20:19:24 +0000 2018"), ``in_reply_to_status_id_str`` and
``entities``. ``full_text`` is HTML-escaped (``&amp;``) and carries t.co short links.

A prolific account's tweets.js runs to hundreds of MB, so it is parsed one tweet at a time
as it is read: memory holds one chunk and one tweet, never the file or its array.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

from pydantic import JsonValue

from producers.exports.archive import CHUNK_BYTES, Archive, UnreadableFile
from producers.exports.normalize import headline, tidy
from producers.exports.reader import ExportReader, Files, Reading, Records
from schemas.common import MiB
from schemas.documents import DocumentKind, RawDocument

PLATFORM = "x"
_TWEET_FILE = re.compile(r"^data/tweets?(?:-part(\d+))?\.js$")
_ASSIGNMENT = re.compile(r"^\s*window\.YTD\.\w+\.part\d+\s*=\s*")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_OFFSET = re.compile(r"^([+-])(\d\d)(\d\d)$")
# Far beyond any tweet object (a few KB); a longer one means the file is not an archive.
MAX_TWEET_CHARS = 8 * MiB
# The window.YTD prefix is found within this many characters or not at all.
_PREFIX_CHARS = 4096
_JSON = json.JSONDecoder()


def recognises(archive: Archive) -> bool:
    return bool(_tweet_files(archive))


def _tweet_files(archive: Archive) -> list[str]:
    """data/tweets.js, data/tweets-part1.js, … in part order."""
    parts = {name: _TWEET_FILE.match(name) for name in archive.names}
    found = {name: int(match[1] or 0) for name, match in parts.items() if match}
    return sorted(found, key=lambda name: (found[name], name))


def _tweets(archive: Archive, name: str) -> Records[object]:
    """The file's tweets as they are parsed, never the file whole."""
    for number, item in enumerate(_items(_Text(archive.chunks(name))), start=1):
        yield f"#tweet {number}", item


class _Text:
    """A file's text, decoded as it is read and consumed from the front."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._read = 0  # bytes
        self.buffer = ""
        self.pos = 0
        self.ended = False

    def more(self) -> bool:
        """Reads on; False at the end of the file."""
        if self.ended:
            return False
        chunk = next(self._chunks, None)
        try:
            text = self._decoder.decode(chunk or b"", final=chunk is None)
        except UnicodeDecodeError as error:
            where = self._read + error.start
            raise UnreadableFile(f"not UTF-8 text ({error.reason} near byte {where})") from None
        self.ended = chunk is None
        self._read += len(chunk or b"")
        if self.pos > CHUNK_BYTES:  # drop what is parsed, so the buffer stays a chunk or two
            self.buffer, self.pos = self.buffer[self.pos :], 0
        self.buffer += text
        return True

    def next_char(self) -> str:
        """The next character that is not white space, left unconsumed; empty at the end."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.buffer) or not self.more():
                return self.buffer[self.pos : self.pos + 1]

    def value(self) -> object:
        """The JSON value that starts here."""
        self.next_char()  # raw_decode does not skip the white space before a value
        while True:
            try:
                item, end = _JSON.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as error:
                if len(self.buffer) - self.pos <= MAX_TWEET_CHARS and self.more():
                    continue  # the value may go on in the next chunk
                raise UnreadableFile(f"{_NOT_JSON}: {error.msg}") from None
            except RecursionError:  # "[[[[..." deeper than the parser's stack
                raise UnreadableFile(f"{_NOT_JSON}: nested too deeply") from None
            if end == len(self.buffer) and self.more():
                continue  # a bare number may go on in the next chunk
            self.pos = end
            return item


_NOT_JSON = "not valid JSON after the window.YTD prefix"


def _items(text: _Text) -> Iterator[object]:
    """The entries of ``window.YTD.<name>.part<N> = [...]``, one at a time."""
    while "=" not in text.buffer and len(text.buffer) < _PREFIX_CHARS and text.more():
        pass
    assignment = _ASSIGNMENT.match(text.buffer)
    if assignment is None:
        raise UnreadableFile("does not start with window.YTD.<name>.part<N> =")
    text.pos = assignment.end()
    if text.next_char() != "[":
        raise UnreadableFile("not a JSON array after the window.YTD prefix")
    text.pos += 1
    if text.next_char() == "]":
        text.pos += 1
    else:
        while True:
            yield text.value()
            after = text.next_char()
            text.pos += 1
            if after == "]":
                break
            if after != ",":
                raise UnreadableFile(f"{_NOT_JSON}: expecting ',' or ']' between tweets")
    while (rest := text.next_char()) == ";":
        text.pos += 1
    if rest:
        raise UnreadableFile(f"{_NOT_JSON}: text after the array")


def _tweet(item: object, reading: Reading) -> RawDocument | None:
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
        author=reading.author,
        kind=DocumentKind.POST,
        platform=PLATFORM,
        canonical_source=url,
        source_url=url,
        title=headline(text),
        content=text,
        published_at=_created_at(created_at),
        crawled_at=reading.crawled_at,
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


read_twitter = ExportReader(
    missing="no data/tweets.js: not an X/Twitter archive",
    files=[Files(_tweet_files, _tweets, _tweet)],
)
