"""Cleaning: a raw document's content -> the text that is chunked, embedded and kept.

One function per kind, chosen through a plain dict. Every rule here removes something
that is not the writer's words (markup, invisible characters, noise a crawler or an
export left behind) and keeps everything that is: the twin retrieves and imitates what
comes out of this module, so the bias is towards keeping.

Decisions (each is the reason for a rule below):

- URLs are kept: a writer cites, recommends and shares links, and "the post where I linked
  the Kafka KIP" is a fair thing to search for. Only their tracking parameters (``utm_*``,
  ``fbclid``... the same list the document ids ignore, ``schemas.ids``) are removed: they
  say how a reader arrived, cost wordpieces in a 256-wordpiece window, and carry no meaning.
- Markdown links become their text, and images their alt text when the alt says something
  (``![Kafka topic layout](...)`` -> ``Kafka topic layout``; ``![image](...)`` or
  ``![IMG_2034.JPG](...)`` -> nothing): the target of a link is not the writer's words,
  its text is.
- Hashtag lines at the end of posts and messages are kept: they are the author's own
  topic words (they help retrieval, which is driven by topics) and part of how they post,
  which the twin should imitate.
- Messages (e-mail, chat) lose quoted lines (``> ...``), the ``On ... wrote:`` line that
  introduces them, and a trailing signature: those are someone else's words, or the same
  boilerplate in every message, which would make every message match every query.
- Code (repository files) is whitespace-sensitive: it is kept byte for byte except for its
  line endings (so a checkout on Windows and one on Linux clean alike), a leading byte
  order mark and trailing whitespace at the end of the file (so adding or removing the
  final newline does not change the cleaned text). Trailing spaces inside a file stay:
  they can be meaning (Markdown hard breaks, string literals, patch files).

``clean`` returns "" when nothing is left; the caller dead-letters empty documents.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from schemas.documents import DocumentKind, RawDocument
from schemas.ids import TRACKING_PARAMETERS

# Line and page separators that mean "new line" (form feed, vertical tab, NEL, U+2028)
# or "new paragraph" (U+2029) in text pasted from word processors and PDFs.
_LINE_BREAKS = str.maketrans({"\x0b": "\n", "\x0c": "\n", "\x85": "\n", "\u2028": "\n"})
# C0/C1 controls other than tab and newline: never writing, and NUL breaks stores downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Invisible format characters: zero-width space, soft hyphen, word joiner and invisible
# operators, bidi marks and embeddings, BOM. Zero-width joiner and non-joiner (U+200D,
# U+200C) are kept: they are spelling in Persian and Indic scripts and glue emoji
# sequences (a family emoji is one emoji because of them).
_INVISIBLE = re.compile(
    "[\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
# Every space separator but the plain space (no-break, thin, ideographic...): the writer
# meant a space; the tokenizer and the space-collapsing rule should see one.
_ODD_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# A run of spaces after a line's first visible character (indentation is Markdown structure:
# nested lists, indented code).
_SPACE_RUN = re.compile(r"(?<=\S) {2,}")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# Inline code spans are kept verbatim: `![x](y)` written in backticks is an example, not markup.
_CODE_SPAN = re.compile(r"(`[^`]*`)")
# A link destination: <anything>, or a URL that may hold one level of balanced parentheses
# (Wikipedia's /Kafka_(software)), then an optional "title".
_DESTINATION = (
    r"\(\s*<?(?P<url>(?<=<)[^>\n]*|(?:[^\s()<>]|\([^\s()]*\))*)>?"
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)"
)
_IMAGE = re.compile(r"!\[([^\]\n]*)\]" + _DESTINATION)
_LINK = re.compile(r"\[([^\]\n]*)\]" + _DESTINATION)
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
# Obsidian-style notes: [[Page]], [[Page|alias]], ![[embedded note or image]].
_WIKI_LINK = re.compile(r"(!?)\[\[([^\]|\n]+)(?:\|([^\]\n]+))?\]\]")
# A bare URL, without the punctuation that ends the sentence around it.
_URL = re.compile(r"https?://[^\s<>\"'`]+?(?=[.,;:!?)\]}'\"]*(?:\s|$))")
_IMAGE_FILE = re.compile(r"\.(?:png|jpe?g|gif|svg|webp|avif|bmp|tiff?|heic)$", re.IGNORECASE)
# Words an alt text is made of when nobody wrote one: "image", "Screenshot 2024-05-01 at
# 10.31.07 AM", "IMG_2034.JPG". An alt with any other word is kept.
_GENERIC_ALT_WORDS = frozenset(
    {
        *("image", "img", "picture", "pic", "photo", "screenshot", "screen", "shot"),
        *("figure", "fig", "graphic", "icon", "logo", "banner", "thumbnail", "untitled"),
        *("alt", "text", "placeholder", "at", "am", "pm", "dsc"),
        *("png", "jpg", "jpeg", "gif", "svg", "webp"),
    }
)
_QUOTED = re.compile(r"\s*>")
_ATTRIBUTION = re.compile(r"On .{1,300} wrote:\s*")
# RFC 3676's signature delimiter is "-- "; exporters that strip trailing spaces leave "--".
# A bare "--" counts only this close to the end (RFC 3676 suggests at most 4 lines).
_SIGNATURE_DELIMITERS = frozenset({"-- ", "--"})
_SIGNATURE_MAX_LINES = 6


def clean(document: RawDocument) -> str:
    """The document's content cleaned for its kind; "" when nothing is left."""
    return CLEANERS[document.kind](document.content)


# --- Shared steps -----------------------------------------------------------------------


def _unify_line_endings(text: str) -> str:
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _normalise_characters(text: str) -> str:
    """NFC text with Unix line ends, no controls or invisible characters, plain spaces."""
    text = _unify_line_endings(text).translate(_LINE_BREAKS).replace("\u2029", "\n\n")
    text = _INVISIBLE.sub("", _CONTROL.sub("", text))
    # NFC last: removing a zero-width character can bring a base letter and its
    # combining mark together.
    return unicodedata.normalize("NFC", _ODD_SPACES.sub(" ", text))


def _without_tracking(match: re.Match[str]) -> str:
    url = match.group(0)
    head, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_mark, fragment = rest.partition("#")
    kept = [
        parameter
        for parameter in query.split("&")
        if not _is_tracking(parameter.split("=", 1)[0].lower())
    ]
    query = "&".join(kept)
    return head + ("?" + query if query else "") + hash_mark + fragment


def _is_tracking(name: str) -> bool:
    return name.startswith("utm_") or name in TRACKING_PARAMETERS


def _alt_text(match: re.Match[str]) -> str:
    alt = match.group(1).strip()
    words = re.findall(r"[^\W\d_]+", alt.lower())
    return alt if any(word not in _GENERIC_ALT_WORDS for word in words) else ""


def _link_text(match: re.Match[str]) -> str:
    # [](https://...) has no text: the address is all there is.
    return match.group(1).strip() or match.group("url").strip()


def _inline_markup(text: str) -> str:
    """Images to alt text, links to their text, tracking parameters out of URLs."""
    text = _IMAGE.sub(_alt_text, text)
    text = _LINK.sub(_link_text, text)
    text = _AUTOLINK.sub(r"\1", text)
    return _URL.sub(_without_tracking, text)


def _clean_line(line: str, markup: Callable[[str], str]) -> str:
    # Split around inline code spans (odd indexes) so their contents stay as written.
    parts = _CODE_SPAN.split(line)
    parts[::2] = [markup(part) for part in parts[::2]]
    return _SPACE_RUN.sub(" ", "".join(parts)).rstrip()


def _tidy(text: str, markup: Callable[[str], str] = _inline_markup) -> str:
    """Prose lines cleaned outside code fences, trailing spaces gone, one blank line at most.

    Fenced code inside prose keeps its spacing and markup (only trailing spaces go).
    """
    lines: list[str] = []
    fence: str | None = None
    for line in _normalise_characters(text).split("\n"):
        opener = _FENCE.match(line)
        if fence is not None:
            closer = line.strip()
            if set(closer) == {fence[0]} and len(closer) >= len(fence):
                fence = None
            lines.append(line.rstrip())
            continue
        if opener:
            fence = opener.group(1)
            lines.append(line.rstrip())
            continue
        cleaned = _clean_line(line, markup)
        # Two blank lines or more say nothing one does not (Markdown reads them alike).
        if cleaned or (lines and lines[-1]):
            lines.append(cleaned)
    # Every line is right-stripped: whitespace-only text comes out as "".
    return "\n".join(lines).strip("\n")


# --- Per kind ---------------------------------------------------------------------------


def _clean_prose(text: str) -> str:
    return _tidy(text)


def _wiki_link(match: re.Match[str]) -> str:
    embed, target, alias = match.group(1), match.group(2).strip(), match.group(3)
    if embed and _IMAGE_FILE.search(target):
        return ""
    return alias.strip() if alias else target


def _note_markup(text: str) -> str:
    return _inline_markup(_WIKI_LINK.sub(_wiki_link, text))


def _clean_note(text: str) -> str:
    return _tidy(text, _note_markup)


def _clean_message(text: str) -> str:
    lines = _unify_line_endings(text).split("\n")
    for number, line in enumerate(lines):
        if line in _SIGNATURE_DELIMITERS and (
            line == "-- " or len(lines) - number - 1 <= _SIGNATURE_MAX_LINES
        ):
            lines = lines[:number]
            break
    kept: list[str] = []
    for line in lines:
        if _QUOTED.match(line):
            # The "On <date>, <someone> wrote:" just above a quote belongs to it.
            while kept and not kept[-1].strip():
                kept.pop()
            if kept and _ATTRIBUTION.fullmatch(kept[-1]):
                kept.pop()
            continue
        kept.append(line)
    return _clean_prose("\n".join(kept))


def _clean_code(text: str) -> str:
    code = _unify_line_endings(text).rstrip()
    return code if code.strip() else ""


CLEANERS: dict[DocumentKind, Callable[[str], str]] = {
    DocumentKind.ARTICLE: _clean_prose,
    DocumentKind.POST: _clean_prose,
    DocumentKind.MESSAGE: _clean_message,
    DocumentKind.NOTE: _clean_note,
    DocumentKind.REPOSITORY_FILE: _clean_code,
}
