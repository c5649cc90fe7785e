"""The embedded default's secrets: the message-signing key and the warehouse's login.

Both are made once, by ``infra up``, under ``LLM_TWIN_HOME`` (mode 0600, in a
0700 home) and read by every command on that home. A deployment that runs its
own Kafka sets ``LLM_TWIN_SIGNING_KEY`` in every process's environment instead
(the same value everywhere), and its own MongoDB's credentials in ``MONGODB_URI``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from infra.settings import PlatformSettings
from schemas.signing import Signer

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "signing-key"
WAREHOUSE_LOGIN_FILE = "warehouse-login.json"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class CredentialsError(RuntimeError):
    """A secret file that is unreadable, malformed or readable by others; the message says which."""


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) made 0700, whatever the umask; an existing one tightened."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, never visible half-written."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> str | None:
    """The file's text; None if it does not exist; refused if group or others may read it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise CredentialsError(
            f"{path} is readable by other users (mode {mode & 0o777:o}): "
            f"run `chmod 600 {path}`, or remove it to have `llm-twin infra up` make a new one"
        )
    return path.read_text(encoding="utf-8")


# -- message signing -----------------------------------------------------------


def ensure_signing_key(home: Path) -> None:
    """The embedded default's signing key, made once (64 hex characters: 256 random bits)."""
    path = home / SIGNING_KEY_FILE
    if read_private(path) is None:
        write_private(path, secrets.token_hex(32) + "\n")


def signer(settings: PlatformSettings) -> Signer | None:
    """The deployment's signer: ``LLM_TWIN_SIGNING_KEY``, else the home's key, else none.

    Without one, messages go unsigned and consumers accept any; said once in the log.
    """
    if settings.signing_key is not None:
        text: str | None = settings.signing_key.get_secret_value()
    else:
        text = read_private(settings.home / SIGNING_KEY_FILE)
    if text is None or not text.strip():
        log.warning(
            "no signing key (LLM_TWIN_SIGNING_KEY, or `llm-twin infra up`): messages are "
            "neither signed nor verified, so anyone who can produce to a topic acts as any author"
        )
        return None
    try:
        return Signer(text.strip().encode("utf-8"))
    except ValueError as error:
        raise CredentialsError(f"the signing key is unusable: {error}") from None


# -- the embedded warehouse's login ----------------------------------------------


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login({self.username!r}, <secret>)"


def warehouse_login(home: Path) -> Login | None:
    text = read_private(home / WAREHOUSE_LOGIN_FILE)
    if text is None:
        return None
    try:
        raw = json.loads(text)
        return Login(str(raw["username"]), str(raw["password"]))
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{home / WAREHOUSE_LOGIN_FILE} is malformed; remove it") from None


def new_warehouse_login() -> Login:
    return Login("llm-twin", secrets.token_urlsafe(32))


def save_warehouse_login(home: Path, login: Login) -> None:
    write_private(
        home / WAREHOUSE_LOGIN_FILE,
        json.dumps({"username": login.username, "password": login.password}) + "\n",
    )
