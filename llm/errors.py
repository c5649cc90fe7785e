"""One error boundary for every generation backend.

Transport failures of all three backends (HTTP to TGI or an OpenAI-compatible
server, in-process generation) end up as one of these, so the retrieval
consumer maps them to an ``error`` event without knowing which backend ran.
"""

from __future__ import annotations


class BackendError(Exception):
    """Generation failed; the message is safe to show a user (no secrets, no prompt)."""


class BackendUnavailable(BackendError):
    """The backend could not be reached or did not answer in time: nothing was generated."""


class BackendFailed(BackendError):
    """The backend answered with an error, or failed part-way through a stream."""
