"""The reference writers: other people's prose that the project ships, never another tenant's.

Plain UTF-8 texts under ``style/reference/<writer>/<title>.txt``, each writer's licence
allowing it to be shipped here (``style/reference/SOURCES.md`` lists every file, its
writer, source and licence). The author classifier (style/attribution.py) learns the
author against them, and evaluation measures the twin's perplexity on them (a twin should
prefer its own author's text to theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Text:
    writer: str
    title: str
    text: str


def directory() -> Path:
    return Path(str(resources.files("style") / "reference"))


def texts(root: Path | None = None) -> list[Text]:
    """Every reference text, by writer then title (a stable order)."""
    base = root if root is not None else directory()
    found = []
    for path in sorted(base.glob("*/*.txt")):
        found.append(Text(path.parent.name, path.stem, path.read_text(encoding="utf-8")))
    return found


def passages(items: list[Text], chars: int, *, limit_per_writer: int | None = None) -> list[Text]:
    """The texts cut at paragraph ends into passages of about ``chars`` characters."""
    out: list[Text] = []
    for writer in sorted({t.writer for t in items}):
        mine: list[Text] = []
        for item in (t for t in items if t.writer == writer):
            mine += [Text(writer, item.title, p) for p in cut(item.text, chars)]
        out += mine[:limit_per_writer] if limit_per_writer is not None else mine
    return out


def cut(text: str, chars: int) -> list[str]:
    """``text`` in passages of about ``chars`` characters, ended at paragraph (or word) ends."""
    pieces: list[str] = []
    current = ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        while len(paragraph) > chars:
            space = paragraph.rfind(" ", 0, chars)
            head, paragraph = paragraph[: space if space > 0 else chars], paragraph[space + 1 :]
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if current and len(current) + len(paragraph) + 2 > chars:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        pieces.append(current)
    return pieces
