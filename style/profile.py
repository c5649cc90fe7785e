"""Stylometric similarity: how much a text reads like an author, measured, not judged.

A style profile of a body of text has four parts, each a frequency
distribution that is independent of what the text is about:

1. function words: relative frequencies of 153 English function words (the
   classic authorship signal: "the", "of", "but", "indeed" as habits, not topics);
2. punctuation: the rate of each punctuation mark per character (dashes,
   semicolons, tildes, ellipses, exclamation marks);
3. sentence lengths: the share of sentences in each length band (words);
4. character 3-grams: relative frequencies of the 300 most frequent 3-grams of
   the reference text (spelling, casing and word-shape habits).

Similarity of a candidate to a reference is the mean of the four cosine
similarities between their distributions, in [0, 1]. Everything is plain
counting: the same texts always give the same score.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_FUNCTION_WORD_LIST = """
    a about above after again against all also although am an and any are as at be because
    been before being below between both but by can could did do does doing down during each
    either enough even ever every few for from further had has have having he her here hers
    him his how however i if in indeed into is it its itself just least less may me might
    mine more most much must my neither no nor not of off often on once only or other ought
    our ours out over own perhaps quite rather same shall she should since so some still
    such than that the their theirs them then there therefore these they this those though
    through thus to too under until up upon us very was we were what when where whether
    which while who whom whose why will with within without would yet you your yours
"""
FUNCTION_WORDS = tuple(_FUNCTION_WORD_LIST.split())
PUNCTUATION = tuple(".,;:!?-\u2013\u2014'\"()[]~*/&\u2026#@")
SENTENCE_BANDS = (5, 10, 15, 20, 25, 30, 40, 60)  # upper bounds, in words
NGRAM = 3
NGRAM_VOCABULARY = 300

_WORD = re.compile(r"[A-Za-z\u00c0-\u024f']+")
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|\n{2,}")
_FUNCTION = frozenset(FUNCTION_WORDS)


@dataclass(frozen=True)
class Profile:
    function_words: dict[str, float]
    punctuation: dict[str, float]
    sentence_lengths: dict[str, float]
    ngrams: dict[str, float]


def profile(texts: Iterable[str], *, vocabulary: Iterable[str] | None = None) -> Profile:
    """The style profile of ``texts`` taken together.

    ``vocabulary``: the 3-grams to count (a reference profile's); by default the
    most frequent ones of these texts.
    """
    body = "\n\n".join(texts)
    words = [w.lower() for w in _WORD.findall(body)]
    function_counts = Counter(w for w in words if w in _FUNCTION)
    characters = max(1, len(body))
    punctuation = {mark: body.count(mark) / characters for mark in PUNCTUATION}
    bands: Counter[str] = Counter()
    for sentence in _SENTENCE_END.split(body):
        length = len(_WORD.findall(sentence))
        if length:
            bands[_band(length)] += 1
    grams = Counter(body[i : i + NGRAM] for i in range(len(body) - NGRAM + 1))
    chosen = (
        list(vocabulary)
        if vocabulary is not None
        else [g for g, _ in grams.most_common(NGRAM_VOCABULARY)]
    )
    return Profile(
        function_words=_normalised({w: function_counts[w] for w in FUNCTION_WORDS}, len(words)),
        punctuation=punctuation,
        sentence_lengths=_normalised(dict(bands), sum(bands.values())),
        ngrams=_normalised({g: grams[g] for g in chosen}, max(1, len(body) - NGRAM + 1)),
    )


def similarity(candidate: Iterable[str], reference: Profile) -> float:
    """How much ``candidate`` texts read like the ``reference`` profile, in [0, 1]."""
    mine = profile(candidate, vocabulary=reference.ngrams)
    parts = [
        _cosine(mine.function_words, reference.function_words),
        _cosine(mine.punctuation, reference.punctuation),
        _cosine(mine.sentence_lengths, reference.sentence_lengths),
        _cosine(mine.ngrams, reference.ngrams),
    ]
    return sum(parts) / len(parts)


def _band(length: int) -> str:
    for upper in SENTENCE_BANDS:
        if length <= upper:
            return f"<={upper}"
    return f">{SENTENCE_BANDS[-1]}"


def _normalised(counts: Mapping[str, float], total: float) -> dict[str, float]:
    return (
        {key: value / total for key, value in counts.items()}
        if total
        else dict.fromkeys(counts, 0.0)
    )


def _cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    keys = set(a) | set(b)
    dot = sum(a.get(k, 0.0) * b.get(k, 0.0) for k in keys)
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0
