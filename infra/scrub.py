"""Personal contact details out of training text: e-mail addresses and phone numbers.

A digit run alone cannot tell a phone number from a date, an ISBN or a figure, so
the scrubber works in three passes:

1. e-mail addresses, and international numbers (``+`` then 8 to 15 digits, with the
   usual separators) unless a unit follows (``+12 000 000 km``);
2. what is kept is set aside: dates and times (``2024-05-01``, ``01/05/2024``,
   ``12:30:05``), ISBNs (after ``ISBN``, or 13 digits from 978/979 with a valid check
   digit), versions (``v1.2.3``; four or more parts, the first without a leading 0, as
   ``06.12.34.56.78`` is a phone number), decimals (``3.14159265``),
   numbers grouped in thousands (``10 000 000``, ``1,250,000``) and numbers with a unit
   or currency (``12345678 km``, ``$ 1 500 000``);
3. what is left of 8 to 15 digits written with separators (``555-123-4567``,
   ``(020) 7946 0958``, ``06 12 34 56 78``), or as one run that starts with the trunk
   prefix 0 (``0612345678``), is a phone number. A bare run that does not start with 0
   (an id, a count, a timestamp) is a number.

Known limit, chosen: a national number written in groups of three (``612 345 678``)
reads as a number in thousands and is kept; the same number with its country code
(``+34 612 345 678``) is scrubbed.
"""

from __future__ import annotations

import re

EMAIL = "[email]"
PHONE = "[phone]"

# Bounded as RFC 5321 bounds them (64 characters before the @, 255 after): an unbounded
# local part made a long run of "1-1-1-…" quadratic (17 s for 100 KB).
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b"
)
_SEPARATOR = r"[ \u00a0\u202f().\-/]"
# Units that are not words may follow a figure after a space ("10 000 000 km"); those that
# are also words ("in", "min", "m") only with no space ("5min"), so "06 12 34 56 78 in the
# evening" stays a phone number.
_SPACED_UNITS = (
    r"(?:[kKMGT]?(?:B|Hz|Wh)|[kKM]W|[kcmµn]m|[kmµ]g|m[lL]|ms|µs|ns|km/h|mph|kcal|"
    r"%|‰|°[CF]?|bytes?|bits?|lbs|"
    r"people|persons|users|words|lines|tokens|rows|items|times|years|months|weeks|days|"
    r"hours|minutes|seconds|dollars|euros|pounds|copies|downloads|views|readers|"
    r"subscribers|stars|votes|records|documents|files|pages|steps|samples|parameters|"
    r"thousand|million|billion|trillion)(?![A-Za-z0-9])"
)
_ATTACHED_UNITS = r"(?:[a-zA-Zµ°%]{1,4})(?![A-Za-z0-9])"
_FIGURE = r"(?:\d{1,3}(?:[ ,.'\u00a0\u202f]\d{3})+|\d+)(?:[.,]\d+)?"
_UNITS = rf"(?:\s?{_SPACED_UNITS}|{_ATTACHED_UNITS})"
# +CC then 8-15 digits in all; a unit after it makes it a quantity (+12 000 000 km).
_INTERNATIONAL = re.compile(
    rf"(?<![\w+])\+\d(?:{_SEPARATOR}{{0,2}}\d){{7,14}}(?!\w|[.,]\d)(?!{_UNITS})"
)
# Where a kept figure may start: not inside a longer run of digits and separators, so that
# the tail of a phone number ("06-12-34-56-78", "06 123 456 789") is not set aside as one.
_START = r"(?<![\d+])(?<!\d[ \u00a0\u202f().\-/,'])"
_KEPT = re.compile(
    "|".join(
        (
            # ISO dates and timestamps, then day/month/year and year/month/day.
            _START + r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?",
            _START + r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}(?![\d]|[./-]\d)",
            _START + r"\d{1,2}:\d{2}(?::\d{2})?",
            r"ISBN(?:-1[03])?:?\s*[\dXx](?:[- ]?[\dXx]){9,12}",
            _START + r"97[89](?:[- ]?\d){10}(?!\d)",  # checked below (the check digit)
            r"(?<![\w.])v\d+(?:\.\d+)+",
            _START + r"(?<![\w.])(?:0|[1-9]\d*)(?:\.\d+){3,}(?![\w.])",
            _START + r"(?<![\d.,])\d+[.,]\d+(?![\d]|[.,]\d)",
            # A figure with a unit or a currency; thousands grouped with one separator.
            _START + r"(?<![\w.,])" + _FIGURE + _UNITS,
            r"[$€£¥₹]\s?" + _FIGURE,
            _START + r"[1-9]\d{0,2}([ ,.'\u00a0\u202f])\d{3}(?:\1\d{3})+(?![\d])",
        )
    )
)
_NATIONAL = re.compile(rf"(?<![\w.,+])\(?\d(?:{_SEPARATOR}{{0,2}}\d){{7,14}}(?!\w|[.,]\d)")
_DIGIT = re.compile(r"\d")


def scrub(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers replaced by ``[email]``/``[phone]``."""
    text = _INTERNATIONAL.sub(PHONE, _EMAIL.sub(EMAIL, text))
    kept: list[str] = []
    mark = _mark_for(text)

    def keep(match: re.Match[str]) -> str:
        found = match.group(0)
        if found.startswith("97") and not _isbn13(found):
            return found  # not an ISBN: the phone pass judges it
        kept.append(found)
        return mark

    masked = _KEPT.sub(keep, text)
    scrubbed = _NATIONAL.sub(_national, masked)
    pieces = scrubbed.split(mark)
    out = [pieces[0]]
    for value, piece in zip(kept, pieces[1:], strict=True):
        out += [value, piece]
    return "".join(out)


def _national(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = _DIGIT.findall(found)
    bare = len(digits) == len(found)
    if bare and digits[0] != "0":
        return found  # one run of digits: an id, a count, a timestamp
    return PHONE


def _isbn13(found: str) -> bool:
    digits = [int(d) for d in _DIGIT.findall(found)]
    if len(digits) != 13:
        return False
    return sum(d * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10 == 0


def _mark_for(text: str) -> str:
    """A character the text does not hold, to stand for what is kept while phones are found."""
    for code in range(0xE000, 0xF8FF):
        if chr(code) not in text:
            return chr(code)
    raise ValueError("no private-use character is free in this text")
