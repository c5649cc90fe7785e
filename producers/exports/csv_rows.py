"""The records of an export's CSV file, good or reported, numbered as a spreadsheet does."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    number: int  # as a spreadsheet numbers it: the header is row 1
    fields: dict[str, str]


@dataclass(frozen=True)
class BadRow:
    number: int
    reason: str


def rows(text: str, required: Sequence[str]) -> Iterator[Row | BadRow]:
    """Every record of ``text`` after its header, as a ``Row`` or, when malformed, a ``BadRow``.

    A header without the ``required`` columns, or a file the CSV parser gives up on, ends the
    iteration with one ``BadRow``: nothing after that point can be read reliably.
    """
    records = csv.reader(io.StringIO(text, newline=""))
    number = 0
    try:
        header = [name.strip() for name in next(records, [])]
        number = 1
        missing = [name for name in required if name not in header]
        if missing:
            yield BadRow(1, f"header lacks column(s) {', '.join(missing)}")
            return
        for record in records:
            number += 1
            if not record:
                continue
            if len(record) != len(header):
                yield BadRow(number, _shape_problem(record, header))
                continue
            yield Row(number, dict(zip(header, record, strict=True)))
    except csv.Error as error:
        yield BadRow(number + 1, f"unreadable CSV from here on: {error}")


def _shape_problem(record: list[str], header: list[str]) -> str:
    if len(record) < len(header):
        absent = ", ".join(header[len(record) :])
        return f"{len(record)} fields where the header has {len(header)} (missing {absent})"
    return f"{len(record)} fields where the header has {len(header)}"
