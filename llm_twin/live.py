"""The `serve`/`up` running on this home: its record, and the calls other commands make to it.

Qdrant local mode admits one process, so a live `serve`/`up` owns the vector
store: `search` and `status` ask it over HTTP instead of opening the store,
`generate` sends its request through Kafka to it, and an evaluation searches through
it (``LiveRetrieval``). The record
(``LLM_TWIN_HOME/serve.json``) names the process by pid and start time, so a
record left by a process that died (or a recycled pid) is not taken for it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from infra.credentials import write_private

if TYPE_CHECKING:
    from llm.prompt import Passage
    from trainer.evaluate import Retrieval

SERVE_RECORD = "serve.json"
LOCAL_KEY_FILE = "api-key"


class LiveError(Exception):
    """The live server did not answer, or refused; the message says which and why."""


@dataclass(frozen=True)
class LiveServer:
    url: str
    pid: int


def live_server(home: Path) -> LiveServer | None:
    """The `serve`/`up` running on this home, if its recorded process still runs."""
    path = home / SERVE_RECORD
    try:
        # Commands send their API key to the URL recorded here: only a record this user
        # wrote, that nobody else may change, is believed.
        mode = path.stat()
        if mode.st_uid != os.getuid() or mode.st_mode & 0o022:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["create_time"])) > 0.01:
            return None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return LiveServer(url=str(record["url"]), pid=int(record["pid"]))


@contextmanager
def recorded(home: Path) -> Iterator[Any]:
    """A function that records this process as the live server at a URL; unrecorded on exit."""
    path = home / SERVE_RECORD

    def record(url: str) -> None:
        me = psutil.Process()
        write_private(
            path, json.dumps({"pid": me.pid, "create_time": me.create_time(), "url": url})
        )

    try:
        yield record
    finally:
        live = live_server(home)
        if live is not None and live.pid == os.getpid():
            path.unlink(missing_ok=True)


def cli_key(home: Path, configured: str | None) -> str | None:
    """The key this CLI sends to a running API: LLM_TWIN_API_KEY, else the local key."""
    if configured is not None:
        return configured
    path = home / LOCAL_KEY_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def search(live: LiveServer, key: str | None, author: str, query: str, k: int) -> Any:
    """``search`` answered by the running API (it holds the store): its result objects."""
    response = _get(live, f"/v1/twins/{author}/search", key, params={"q": query, "k": k})
    if response.status_code != 200:
        detail = _detail(response)
        raise LiveError(f"search through {live.url} failed ({response.status_code}): {detail}")
    return response.json()["results"]


def readiness(live: LiveServer) -> dict[str, Any]:
    """The running server's ``/readyz``: whether it is ready, and the state of each part."""
    response = _get(live, "/readyz", None, timeout_s=10)
    if response.status_code not in (200, 503):
        raise LiveError(f"{live.url}/readyz answered {response.status_code}")
    try:
        report = response.json()
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise LiveError(f"{live.url}/readyz did not answer a JSON object")
    return report


def _get(
    live: LiveServer,
    route: str,
    key: str | None,
    *,
    params: dict[str, Any] | None = None,
    timeout_s: float = 60,
) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(f"{live.url}{route}", params=params, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise LiveError(f"the running serve at {live.url} did not answer: {error}") from None


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    return (
        str(body["detail"])
        if isinstance(body, dict) and "detail" in body
        else response.reason_phrase
    )


class LiveRetrieval:
    """An evaluation's searches, answered by the running API (it holds the store)."""

    k = 5

    def __init__(self, running: LiveServer, key: str | None) -> None:
        self._running = running
        self._key = key

    def search(self, author: str, query: str, k: int) -> list[tuple[uuid.UUID, Passage]]:
        from trainer.evaluate import passages

        return passages(search(self._running, self._key, author, query[:2000], k))

    def close(self) -> None:
        pass


class Borrowed:
    """A retrieval over a store its process keeps open: closing it leaves the store open."""

    def __init__(self, retrieval: Retrieval) -> None:
        self._retrieval = retrieval
        self.k = retrieval.k

    def search(self, author: str, query: str, k: int) -> list[tuple[uuid.UUID, Passage]]:
        return self._retrieval.search(author, query, k)

    def close(self) -> None:
        pass
