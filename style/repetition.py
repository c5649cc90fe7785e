"""Repetition: distinct-n, the share of a text's word n-grams that are not repeats.

A small model loops ("a greedy pattern is often misunderstood as a greedy pattern"):
its distinct-2 and distinct-3 fall well below a human writer's. Measured per text and
averaged, so one long text does not stand for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence


def distinct(texts: Sequence[str], n: int) -> float | None:
    """The mean over ``texts`` of unique word n-grams / word n-grams (texts too short skipped)."""
    shares = []
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        if grams:
            shares.append(len(set(grams)) / len(grams))
    return sum(shares) / len(shares) if shares else None


def report(texts: Sequence[str]) -> dict[str, float | None]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {"distinct_2": rounded(distinct(texts, 2)), "distinct_3": rounded(distinct(texts, 3))}
