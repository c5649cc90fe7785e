"""``serve``: the retrieval consumer and the HTTP API, in one event loop.

The caller (the CLI) hands in what it opened: the vector store (which, in the
embedded default, its ingestion dataflow shares), the embedder, the backend
and the warehouse. ``serve`` returns after SIGINT/SIGTERM, once the API has
stopped, the consumer has left its group and the reply channel is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
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

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def build_answerer(parts: Parts) -> tuple[Answerer, Retriever, ActiveAdapters]:
    retriever = Retriever(parts.store, parts.embedder, k=parts.settings.retrieval_k)
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


async def serve(
    parts: Parts,
    keys: ApiKeys,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None] = lambda url: None,
) -> None:
    consumer, retriever = build_consumer(parts)
    await consumer.start()
    channel, claim = open_channel(
        parts.bootstrap_servers,
        parts.home,
        one_record_per_batch=parts.one_record_per_batch,
        partition=parts.settings.reply_partition,
        signer=parts.signer,
    )
    app = create_app(
        channel,
        keys,
        functools.partial(search_results, retriever),
        authors=parts.store.authors,
        ready=consumer.joined.is_set,
        timeout_s=parts.settings.request_timeout_s,
        limits=Limits.of(parts.settings),
        count_tokens=parts.backend.count_tokens,
    )
    # X-Forwarded-For names the client only when a proxy on this machine sent it: /metrics
    # answers loopback clients, and FORWARDED_ALLOW_IPS in the environment must not widen that.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1,::1",
    )
    server = _Server(config)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        await consumer.joined.wait()
        bound = server.servers[0].sockets[0].getsockname() if server.servers else (host, port)
        on_ready(f"http://{_host_for_url(host)}:{bound[1]}")

    announcer = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        announcer.cancel()
        channel.close()
        if claim is not None:
            claim.release()
        await consumer.stop()
        await parts.backend.aclose()


class _Server(uvicorn.Server):
    """uvicorn's server, except that Ctrl-C / SIGTERM only ends ``serve()``.

    uvicorn raises the signal again once it has shut down, which would interrupt
    the consumer's and the dataflow's orderly stop that follows it here.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104  # naming it, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
