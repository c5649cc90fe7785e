"""Why a trainer job did nothing: the command turns each into its sentence and exit code."""

from __future__ import annotations


class NothingToDo(Exception):
    """No snapshot, no adapter, no rows: nothing to train or evaluate (the command exits 2)."""


class Refused(Exception):
    """A setting, model or snapshot the job cannot use (the command exits 1)."""
