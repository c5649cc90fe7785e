"""A folder (or zip) of notes: one note per *.md, *.markdown or *.txt file, or a single such file.

A note's identity is its import's (``Reading.origin``: the name given with ``import --as``,
else the folder's resolved path; a single file's is its folder's, so importing the file or
its folder is the same note) and its path inside it. Notes imported before imports had an
identity were ``note:<path>`` alone, so two folders holding ``index.txt`` were one
document: each note names that old identity in ``metadata["supersedes"]``, and publishing
it forgets the old document (producers/publish.py).

YAML front matter between leading ``---`` lines is honoured: ``title``, ``date`` or
``published``, ``tags``, ``canonical_url``, and ``draft: true`` / ``published: false``
(Hugo's and Jekyll's ways of saying "not published"), which skip the note.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path, PurePosixPath

import yaml
from pydantic import JsonValue

from producers.exports.archive import Archive, ImportLimits
from producers.exports.normalize import in_utc, parse_timestamp, tidy
from producers.exports.reader import ExportReader, Files, Reading, whole_text
from schemas.documents import DocumentKind, RawDocument
from schemas.ids import canonical_url

PLATFORM = "notes"
NOTE_SUFFIXES = frozenset({".md", ".markdown", ".txt"})
_HEADING = re.compile(r"^#\s+(.+?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_FRONT_MATTER_END = frozenset({"---", "..."})


def is_note(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in NOTE_SUFFIXES


def recognises(archive: Archive) -> bool:
    return bool(_note_names(archive))


def _note_names(archive: Archive) -> list[str]:
    return [name for name in archive.names if is_note(name)]


def _origin(path: Path) -> str:
    """A folder's or a zip's resolved path; for a single note, its folder's (as named)."""
    if path.is_file() and is_note(path.name):
        return str(path.parent.resolve())
    return str(path.resolve())


def _open(path: Path, limits: ImportLimits) -> Archive:
    if path.is_file() and is_note(path.name):
        return Archive.single(path, limits)
    return Archive.open(path, limits)


def _note(text: str, reading: Reading) -> RawDocument | None:
    """The note in one file; None for a draft."""
    name = reading.name
    front, body = _front_matter(text.replace("\r\n", "\n"))
    if front.get("draft") is True or front.get("published") is False:
        return None
    content = tidy(body)
    if not content:
        raise ValueError("empty after extraction")
    canonical = _text_field(front, "canonical_url")
    legacy = f"note:{name}"
    metadata: dict[str, JsonValue] = {"path": name, "import": reading.origin}
    # Every identity since has a '#': a name holding one may be crafted to equal a note's
    # identity today ("blog#index.txt"), and must never forget that note.
    if not canonical and "#" not in name:
        metadata["supersedes"] = legacy
    tags = _tags(front.get("tags"))
    if tags:
        metadata["tags"] = list(tags)
    return RawDocument.build(
        author=reading.author,
        kind=DocumentKind.NOTE,
        platform=PLATFORM,
        canonical_source=canonical_url(canonical) if canonical else f"note:{reading.origin}#{name}",
        source_url=canonical or None,
        title=_text_field(front, "title") or _first_heading(content) or PurePosixPath(name).stem,
        content=content,
        published_at=_published_at(front),
        crawled_at=reading.crawled_at,
        metadata=metadata,
    )


def _front_matter(text: str) -> tuple[dict[str, object], str]:
    """The front matter's fields and the text after it; no fields when there is none.

    A leading ``---`` that is never closed is a Markdown rule, not front matter.
    """
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in _FRONT_MATTER_END), None)
    if end is None:
        return {}, text
    try:
        # safe_load also builds dates, and raises ValueError for impossible ones (month 13).
        fields = yaml.safe_load("\n".join(lines[1:end]))
    except (yaml.YAMLError, ValueError) as error:
        raise ValueError(f"invalid front matter YAML: {' '.join(str(error).split())}") from None
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise ValueError("front matter is not a mapping of fields")
    return {str(key): value for key, value in fields.items()}, "\n".join(lines[end + 1 :])


def _text_field(front: dict[str, object], key: str) -> str:
    value = front.get(key)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise ValueError(f"front matter {key} is not text")
    return tidy(" ".join(str(value).split()))


def _tags(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        separator = "," if "," in value else None  # "a, b c" or "a b"
        return [tag.strip() for tag in value.split(separator) if tag.strip()]
    if isinstance(value, list):
        return [tidy(str(tag)) for tag in value if tag is not None and str(tag).strip()]
    raise ValueError("front matter tags is neither a list nor text")


def _published_at(front: dict[str, object]) -> datetime | None:
    for key in ("date", "published"):
        value = front.get(key)
        if isinstance(value, bool) or value is None:
            continue  # published: true is a flag, not a date
        if isinstance(value, (datetime, date)):
            return in_utc(value)
        if isinstance(value, str):
            return parse_timestamp(value)
        raise ValueError(f"front matter {key} is not a date")
    return None


def _first_heading(markdown: str) -> str:
    """The first level-one ATX heading outside code blocks."""
    fenced = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := _HEADING.match(line)):
            return heading[1].strip()
    return ""


read_notes = ExportReader(
    missing="no Markdown or text notes (*.md, *.markdown, *.txt)",
    files=[Files(_note_names, whole_text, _note)],
    opens=_open,
    origin_of=_origin,
)
