"""The retrieval consumer and the HTTP API as long-running parts of one event loop.

The composition root hands in what it opened: the vector store (which, in the
embedded default, its ingestion dataflow shares), the embedder, the backend
and the warehouse. :func:`run_consumer` and :func:`run_api` each run one part
until they are cancelled (the consumer leaves its group, the API stops and its
reply channel is closed) and raise when their part dies by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from pymongo.database import Database

from infra import kafka, warehouse
from llm.backend import Backend
from schemas.signing import Signer
from serving.adapters import ActiveAdapters
from serving.answer import Answerer, AnswerSettings
from serving.api import Limits, create_app
from serving.consumer import RetrievalConsumer
from serving.keys import ApiKeys
from serving.replies import open_channel
from serving.retrieval import Retriever
from serving.settings import ServingSettings
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

log = logging.getLogger(__name__)

# A new member of the consumer group gets its partitions in ~3 s on Tansu (measured here).
JOIN_TIMEOUT_S = 60.0
# Streams in flight when the API stops get this long to finish before they are cut.
DRAIN_S = 10.0


@dataclass(frozen=True)
class Parts:
    bootstrap_servers: kafka.Brokers | str
    one_record_per_batch: bool
    db: Database[warehouse.Document]
    store: VectorStore
    embedder: Embedder
    backend: Backend
    home: Path
    settings: ServingSettings
    signer: Signer | None = None


def retriever_of(parts: Parts) -> Retriever:
    return Retriever(parts.store, parts.embedder, k=parts.settings.retrieval_k)


def build_answerer(parts: Parts) -> tuple[Answerer, Retriever, ActiveAdapters]:
    retriever = retriever_of(parts)
    adapters = ActiveAdapters(parts.db, parts.backend, adapters_root=parts.home / "adapters")

    @functools.lru_cache(maxsize=1024)
    def author_name(slug: str) -> str:
        return warehouse.display_name(parts.db, slug) or slug

    answerer = Answerer(
        retriever,
        parts.backend,
        AnswerSettings(
            context_tokens=parts.settings.context_tokens,
            expand_queries=parts.settings.expand_queries,
        ),
        author_name=author_name,
        adapter_for=adapters.for_author,
    )
    return answerer, retriever, adapters


def build_consumer(parts: Parts) -> tuple[RetrievalConsumer, Retriever]:
    """The retrieval consumer over ``parts``, following twin.models, and its retriever."""
    answerer, retriever, adapters = build_answerer(parts)
    consumer = RetrievalConsumer(
        parts.bootstrap_servers,
        answerer,
        parts.db,
        datadir=parts.home / "serving",
        on_adapter=adapters.registered,
        signer=parts.signer,
    )
    return consumer, retriever


def search_results(retriever: Retriever, author: str, query: str, k: int) -> list[dict[str, Any]]:
    """``search --json``'s result objects."""
    return [
        {
            "score": hit.score,
            "document_id": hit.payload.get("document_id"),
            "title": hit.payload.get("title"),
            "source_url": hit.payload.get("source_url"),
            "text": hit.payload.get("text"),
        }
        for hit in retriever.search(author, query, k)
    ]


async def run_consumer(
    parts: Parts,
    ready: Callable[[], None],
    *,
    on_start: Callable[[RetrievalConsumer], None] = lambda consumer: None,
    join_timeout_s: float = JOIN_TIMEOUT_S,
) -> None:
    """Run a retrieval consumer until cancelled; raise what crashed it (a lost broker).

    A consumer that gets no partitions within ``join_timeout_s``, or crashes
    before it does, fails too: its part is restarted instead of staying unready.
    """
    consumer, _ = build_consumer(parts)
    on_start(consumer)
    try:
        await consumer.start()
        joined = asyncio.create_task(consumer.joined.wait())
        crashed = asyncio.create_task(consumer.crashed())
        try:
            await asyncio.wait(
                [joined, crashed], timeout=join_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if crashed.done():
                raise crashed.result()
            if not joined.done():
                raise TimeoutError(f"the consumer got no partitions in {join_timeout_s:g} s")
            ready()
            raise await crashed
        finally:
            joined.cancel()
            crashed.cancel()
    finally:
        try:
            await consumer.stop()
        except Exception as error:  # noqa: BLE001  # the reason it stopped matters more
            log.warning("the retrieval consumer did not stop cleanly: %s", error)


async def run_api(
    parts: Parts,
    keys: ApiKeys,
    listener: socket.socket,
    *,
    host: str,
    ready_check: Callable[[], bool],
    report: Callable[..., Mapping[str, Any]],
    ready: Callable[[], None],
    on_url: Callable[[str], None] = lambda url: None,
    drain_s: float = DRAIN_S,
) -> None:
    """Serve the HTTP API on ``listener`` until cancelled (or until uvicorn stops by itself).

    Cancelled, it stops taking connections and gives the streams in flight
    ``drain_s`` to finish. ``listener`` is closed on the way out.
    """
    channel, claim = None, None
    server: _Server | None = None
    serving: asyncio.Task[None] | None = None
    try:
        # The reply channel reads the topic's offsets (a broker round trip): off the loop.
        channel, claim = await asyncio.to_thread(
            open_channel,
            parts.bootstrap_servers,
            parts.home,
            one_record_per_batch=parts.one_record_per_batch,
            partition=parts.settings.reply_partition,
            signer=parts.signer,
        )
        app = create_app(
            channel,
            keys,
            functools.partial(search_results, retriever_of(parts)),
            authors=parts.store.authors,
            ready=ready_check,
            parts=report,
            timeout_s=parts.settings.request_timeout_s,
            limits=Limits.of(parts.settings),
            count_tokens=parts.backend.count_tokens,
        )
        # X-Forwarded-For names the client only when a proxy on this machine sent it:
        # /metrics answers loopback clients, and FORWARDED_ALLOW_IPS in the environment
        # must not widen that.
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1,::1",
            timeout_graceful_shutdown=max(1, round(drain_s)),
        )
        server = _Server(config)
        serving = asyncio.create_task(_serve(server, listener))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            ready()
            on_url(f"http://{_host_for_url(host)}:{listener.getsockname()[1]}")
        await asyncio.shield(serving)
        raise RuntimeError("the HTTP server stopped by itself")
    finally:
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):  # a second cancel still ends this wait
                await serving
        listener.close()
        if channel is not None:
            channel.close()
        if claim is not None:
            claim.release()


async def _serve(server: uvicorn.Server, listener: socket.socket) -> None:
    try:
        await server.serve(sockets=[listener])
    except SystemExit:  # uvicorn's way of saying it could not start
        raise RuntimeError("the HTTP server could not start (see its log above)") from None


class _Server(uvicorn.Server):
    """uvicorn's server, except that signals are left to whoever runs it (the supervisor)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104  # naming it, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
