"""Promotion: whether a newly trained adapter may answer for its author.

A new adapter becomes active only if, against the active adapter's evaluation:

- its held-out perplexity is not worse (the registry's own rule: infra/adapters.py);
- its drafts' attribution and style similarity are not worse beyond their measured noise
  (each figure's bootstrap standard error, both adapters' combined: style/noise.py), so a
  good adapter is not refused by chance;
- its copying guard holds: its drafts do not recite the training text (style/copying.py).

An adapter that could not be evaluated is not promoted over one that was. The reason for
a refusal is stored with the adapter; ``adapters list`` shows it.
"""

from __future__ import annotations

from typing import Any

from style import copying, noise

MEASURES = ("attribution", "style_similarity")


def refusal(candidate: dict[str, Any] | None, current: dict[str, Any] | None) -> str | None:
    """Why ``candidate``'s evaluation may not replace ``current``'s; None when it may."""
    if candidate is None:
        return "not evaluated" if current is not None else None
    copied = candidate.get("copying") or {}
    recited = copying.recites(copied, copied.get("human") or {})
    if recited is not None:
        return f"copying: {recited}"
    if current is None:
        return None
    for measure in MEASURES:
        mine, theirs = _twin(candidate, measure), _twin(current, measure)
        if mine is None or theirs is None:
            continue
        errors = (_noise(candidate, measure), _noise(current, measure))
        if not noise.not_worse(mine, theirs, *errors):
            allowed = noise.tolerance(*errors)
            return (
                f"{measure.replace('_', ' ')} {mine:.3f} is below the active adapter's "
                f"{theirs:.3f} by more than its noise ({allowed:.3f})"
            )
    return None


def _twin(report: dict[str, Any], measure: str) -> float | None:
    value = (report.get(measure) or {}).get("twin")
    return float(value) if value is not None else None


def _noise(report: dict[str, Any], measure: str) -> float | None:
    value = (report.get("noise") or {}).get(measure)
    return float(value) if value is not None else None
