"""The copying guard: how much of a draft is the training text, verbatim.

A twin that recites is not writing. Two measures, on words (case and spacing as
written, whitespace normalised):

- ``max_overlap_chars``: the longest run of a draft's words that occurs verbatim in the
  training text, in characters;
- ``ngram8_overlap``: the share of the drafts' word 8-grams that occur in the training
  text (an author repeats a phrase now and then; a recital repeats all of them).

Both are also measured on the author's own held-out documents, the level a human writer
reaches by habit alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NGRAM = 8


@dataclass(frozen=True)
class Copying:
    max_overlap_chars: int
    ngram8_overlap: float | None

    def as_json(self) -> dict[str, float | int | None]:
        return {
            "max_overlap_chars": self.max_overlap_chars,
            "ngram8_overlap": None
            if self.ngram8_overlap is None
            else round(self.ngram8_overlap, 4),
        }


class Source:
    """The training text, indexed by word n-grams for the overlap questions."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._documents = [text.split() for text in texts]
        self._grams: dict[int, set[tuple[str, ...]]] = {}

    def grams(self, n: int) -> set[tuple[str, ...]]:
        if n not in self._grams:
            self._grams[n] = {
                tuple(words[i : i + n])
                for words in self._documents
                for i in range(len(words) - n + 1)
            }
        return self._grams[n]

    def longest(self, text: str) -> int:
        """The longest run of ``text``'s words found verbatim here, in characters."""
        words = text.split()
        low, high, best = 0, len(words), 0  # low words are known to occur (0 trivially)
        while low < high:
            n = (low + high + 1) // 2
            found = self._runs(words, n)
            if found:
                low, best = n, max(found)
            else:
                high = n - 1
        return best

    def _runs(self, words: list[str], n: int) -> list[int]:
        grams = self.grams(n)
        return [
            len(" ".join(words[i : i + n]))
            for i in range(len(words) - n + 1)
            if tuple(words[i : i + n]) in grams
        ]

    def measure(self, texts: Sequence[str]) -> Copying:
        grams = self.grams(NGRAM)
        total = found = 0
        for text in texts:
            words = text.split()
            for i in range(len(words) - NGRAM + 1):
                total += 1
                found += tuple(words[i : i + NGRAM]) in grams
        longest = max((self.longest(text) for text in texts), default=0)
        return Copying(longest, found / total if total else None)


# A twin may reuse the training text's 8-grams this much more often than the author's own
# held-out writing does, and its longest verbatim run may be twice the author's longest,
# and at least about two sentences, before it counts as reciting.
NGRAM_SLACK = 0.10
MIN_RUN_CHARS = 240


def recites(
    twin: dict[str, float | int | None], human: dict[str, float | int | None]
) -> str | None:
    """Why the twin's drafts recite the training text, or None when the guard holds."""
    twin_ngrams, human_ngrams = twin.get("ngram8_overlap"), human.get("ngram8_overlap")
    if twin_ngrams is not None and float(twin_ngrams) > float(human_ngrams or 0.0) + NGRAM_SLACK:
        return (
            f"its drafts repeat the training text's 8-grams {float(twin_ngrams):.0%} of the "
            f"time (the author's own held-out writing: {float(human_ngrams or 0.0):.0%})"
        )
    run, human_run = (
        int(twin.get("max_overlap_chars") or 0),
        int(human.get("max_overlap_chars") or 0),
    )
    limit = max(2 * human_run, MIN_RUN_CHARS)
    if run > limit:
        return f"a draft copies {run} characters of the training text verbatim (at most {limit})"
    return None
