"""Measured noise: a bootstrap over the samples says how much a figure moves by chance.

A style figure comes from a few drafts; another handful would give another figure. The
bootstrap resamples the drafts with replacement and recomputes the figure; the standard
deviation of those figures is the figure's standard error. Two adapters' figures differ
beyond noise when the difference exceeds ``Z`` (one-sided 95 %) times the two standard
errors combined, so a good adapter is not refused by chance. Seeded: deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
ROUNDS = 200
Z = 1.645


def standard_error(
    samples: Sequence[T], statistic: Callable[[Sequence[T]], float | None], *, seed: int = 0
) -> float | None:
    """The bootstrap standard error of ``statistic`` over ``samples`` (None under two)."""
    if len(samples) < 2:
        return None
    rng = random.Random(seed)  # noqa: S311  # resampling, not secrecy
    values = []
    for _ in range(ROUNDS):
        drawn = [samples[rng.randrange(len(samples))] for _ in samples]
        value = statistic(drawn)
        if value is not None:
            values.append(value)
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def tolerance(*errors: float | None) -> float:
    """How far a figure may fall before it is worse beyond noise (0 without errors)."""
    known = [e for e in errors if e is not None]
    return Z * math.sqrt(sum(e * e for e in known)) if known else 0.0


def not_worse(candidate: float, current: float, *errors: float | None) -> bool:
    """``candidate`` (higher is better) is not below ``current`` beyond the noise."""
    return candidate >= current - tolerance(*errors)
