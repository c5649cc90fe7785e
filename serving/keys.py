"""API keys: which bearer token may use which twins.

``LLM_TWIN_API_KEYS`` maps each key to the author slugs it may use (``"*"``:
all). Unset, the API serves loopback only with one local key, made on first
use and kept in ``LLM_TWIN_HOME/api-key`` (mode 0600; a key file that other
users may read or write is refused). Keys are compared in
constant time and never logged: a :class:`Caller` carries only a fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

ALL_AUTHORS = "*"
LOCAL_KEY_FILE = "api-key"
MIN_KEY_LENGTH = 16


class KeysError(ValueError):
    pass


@dataclass(frozen=True)
class Caller:
    fingerprint: str  # the key's sha256, cut: enough to tell callers apart in metrics
    authors: frozenset[str]

    def may_use(self, author: str) -> bool:
        return ALL_AUTHORS in self.authors or author in self.authors


class ApiKeys:
    def __init__(self, grants: dict[str, frozenset[str]]) -> None:
        if not grants:
            raise KeysError("no API keys configured")
        self._grants = grants

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise KeysError(f"LLM_TWIN_API_KEYS is not JSON: {error.msg}") from None
        if not isinstance(raw, dict):
            raise KeysError("LLM_TWIN_API_KEYS must be a JSON object: key -> [author slugs]")
        grants: dict[str, frozenset[str]] = {}
        for number, (key, authors) in enumerate(raw.items(), 1):
            if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
                raise KeysError(f"API key #{number} is shorter than 16 characters")
            if not isinstance(authors, list) or not all(isinstance(a, str) for a in authors):
                raise KeysError(f"API key #{number} must map to a list of author slugs")
            grants[key] = frozenset(authors)
        return cls(grants)

    @classmethod
    def local(cls, home: Path) -> tuple[ApiKeys, str]:
        key = local_key(home)
        return cls({key: frozenset({ALL_AUTHORS})}), key

    def caller(self, key: str | None) -> Caller | None:
        """The caller ``key`` identifies; None for a missing or unknown key."""
        if not key:
            return None
        for known, authors in self._grants.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return Caller(hashlib.sha256(key.encode()).hexdigest()[:12], authors)
        return None


def local_key(home: Path) -> str:
    """The local key under ``home``, made (0600) when there is none yet.

    Written whole before it appears (a private temporary file, then a hard
    link): a second process starting at the same moment reads the first one's
    complete key, never an empty file.
    """
    path = home / LOCAL_KEY_FILE
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=home, prefix=".api-key-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"twin-{secrets.token_urlsafe(32)}\n")
            with contextlib.suppress(FileExistsError):  # another process's key won
                os.link(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:  # another local user may have read it: it admits to every twin
        raise KeysError(
            f"{path} is readable or writable by other users (mode {mode:04o}): "
            f"run `chmod 600 {path}`, or delete it to make a new key"
        )
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_KEY_LENGTH:
        raise KeysError(f"{path} holds no usable key: delete it to make a new one")
    return key
