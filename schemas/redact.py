"""Credentials out of what is shown: the user-info of every URL in a text, masked."""

from __future__ import annotations

import re

# "scheme://user:password@" or "scheme://token@": everything between :// and @ in one authority.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+@")


def without_credentials(text: str) -> str:
    """``text`` with each URL's ``user:password@`` (or ``token@``) shown as ``***@``."""
    return _URL_CREDENTIALS.sub("***@", text)
