"""Attribution: a stylometric classifier says whether a text is its author's.

Character 2-4-grams (within words and across their edges) and word 1-2-grams, tf-idf
weighted with sublinear counts, into a logistic regression with balanced classes
(scikit-learn): the standard authorship-attribution baseline, which reads habits of
spelling, punctuation and phrasing more than topic. It is trained on passages of the
author's training documents (the positive class) against passages of the reference
writers that the project ships (style/reference.py) — never another tenant's writing.

``probabilities`` gives each text's probability of being the author's; the share of a
set of texts above one half is the attribution that evaluation reports for the twin's
drafts, the base model's drafts and the author's own held-out documents (the human
ceiling). Deterministic: the same texts train the same classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from style import reference

PASSAGE_CHARS = 600
# Enough of each reference writer to learn "not the author" without drowning a small author.
PASSAGES_PER_WRITER = 120


class TooLittleText(ValueError):
    """Not enough writing on one side to learn the author."""


@dataclass(frozen=True)
class Attribution:
    """A trained classifier: ``probabilities`` of texts being the author's."""

    pipeline: Any
    author_passages: int
    other_passages: int

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        column = list(self.pipeline.classes_).index(1)
        return [float(p[column]) for p in self.pipeline.predict_proba(list(texts))]

    def share(self, texts: Sequence[str]) -> float | None:
        """The share of ``texts`` attributed to the author (probability above one half)."""
        found = self.probabilities(texts)
        return sum(p > 0.5 for p in found) / len(found) if found else None


def train(
    author_texts: Sequence[str],
    others: Sequence[reference.Text] | None = None,
    *,
    passage_chars: int = PASSAGE_CHARS,
    per_writer: int = PASSAGES_PER_WRITER,
) -> Attribution:
    """The author's classifier, from their training texts and the reference writers'."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    mine = [p for text in author_texts for p in reference.cut(text, passage_chars)]
    pool = list(others) if others is not None else reference.texts()
    theirs = [t.text for t in reference.passages(pool, passage_chars, limit_per_writer=per_writer)]
    if len(mine) < 2 or len(theirs) < 2:
        raise TooLittleText(
            f"attribution needs writing on both sides: {len(mine)} passages of the author's, "
            f"{len(theirs)} of the reference writers'"
        )
    features = FeatureUnion(
        [
            (
                "characters",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2
                ),
            ),
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=False)),
        ]
    )
    pipeline = Pipeline(
        [
            ("features", features),
            ("classifier", LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000)),
        ]
    )
    pipeline.fit(mine + theirs, [1] * len(mine) + [0] * len(theirs))
    return Attribution(pipeline, len(mine), len(theirs))
