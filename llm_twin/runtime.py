"""The composition root: each part of a deployable built once, from settings, and run supervised.

Every command that needs the vector store, the embedder, the model or the
trainer gets them here, so each is opened in one way and fails with one
sentence (:class:`Fatal`) instead of a traceback. The long-running
deployables (`serve`, `up`, `ingest`, `trainer`) run their parts under one
:class:`~llm_twin.supervisor.Supervisor`: the ingestion dataflow, the
retrieval consumer, the API and the trainer consumer, each with a name, a
state (served on ``/readyz``) and the restart policy of the supervisor.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from infra import kafka, warehouse
from infra.settings import PlatformSettings
from llm_twin import live
from llm_twin.stack import Stack, warehouse_db
from llm_twin.supervisor import Fatal as Fatal  # the failure every command reports
from llm_twin.supervisor import Part, Policy, Ready, Supervisor, reason_of, threaded
from schemas.topics import RAW_DOCUMENTS

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.database import Database

    from llm.backend import Backend
    from serving.keys import ApiKeys
    from serving.server import Parts
    from serving.settings import ServingSettings
    from streams.run import Connections
    from streams.settings import IngestSettings
    from trainer.consumer import TrainerParts
    from trainer.evaluate import Retrieval
    from trainer.evaluation import Evaluate
    from trainer.settings import TrainSettings
    from vectorstore.embedder import Embedder
    from vectorstore.store import VectorStore

Say = Callable[[str], None]
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# -- settings, each read once and refused in one sentence ------------------------------------


def _first_reason(what: str, error: ValidationError) -> Fatal:
    reasons = "; ".join(str(e["msg"]) for e in error.errors())
    return Fatal(f"bad {what} settings: {reasons}")


def serving_settings() -> ServingSettings:
    from serving.settings import ServingSettings

    try:
        return ServingSettings()
    except ValidationError as error:
        raise _first_reason("serving", error) from None


def ingest_settings() -> IngestSettings:
    from streams.settings import IngestSettings

    try:
        return IngestSettings()
    except ValidationError as error:
        raise _first_reason("ingest", error) from None


def policy(settings: PlatformSettings) -> Policy:
    return Policy(
        max_restarts=settings.restart_limit,
        backoff_s=settings.restart_backoff_s,
        stop_timeout_s=settings.stop_timeout_s,
    )


def qdrant_api_key(settings: PlatformSettings) -> str | None:
    return settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None


# -- the parts every process shares ----------------------------------------------------------


def load_embedder(ingest: IngestSettings) -> Embedder:
    """The embedding model, or :class:`Fatal` saying which one could not be loaded and why."""
    from vectorstore.embedder import Embedder

    try:
        return Embedder.load(ingest.embedding_model)
    except (OSError, ValueError, RuntimeError) as error:
        name = ingest.embedding_model or "the bundled all-MiniLM-L6-v2"
        raise Fatal(f"cannot load the embedding model {name}: {reason_of(error)}") from None


def open_store(
    settings: PlatformSettings, embedder: Embedder, *, busy: str | None = None
) -> VectorStore:
    """The vector store (Qdrant server or local directory), the one way it is opened.

    A local directory another process holds: :class:`Fatal` with ``busy`` as
    the sentence, or, without ``busy``, :class:`~vectorstore.store.StoreBusy`
    for a caller that waits for that process instead.
    """
    from vectorstore.store import StoreBusy, VectorStore

    try:
        return VectorStore.open(
            settings.qdrant_location, qdrant_api_key(settings), dimensions=embedder.dimensions
        )
    except StoreBusy as error:
        if busy is None:
            raise
        raise Fatal(busy or str(error)) from None
    except (OSError, ValueError, RuntimeError) as error:
        raise Fatal(f"cannot open the vector store: {reason_of(error)}") from None


def load_backend(settings: PlatformSettings) -> Backend:
    """The configured model, loaded or reached, or :class:`Fatal` saying why."""
    from llm.errors import BackendError
    from llm.models import ModelNotFound
    from llm.select import open_backend
    from llm.settings import LLMSettings

    try:
        return open_backend(LLMSettings(), settings.home)
    except ValidationError as error:
        raise _first_reason("model", error) from None
    except (BackendError, ModelNotFound, OSError, ValueError, RuntimeError) as error:
        raise Fatal(f"cannot load the model: {reason_of(error)}") from None


def connections(settings: PlatformSettings, stack: Stack) -> Connections:
    from confluent_kafka import KafkaException

    from streams.run import Connections

    try:
        incarnation = kafka.cluster_id(stack.brokers)
    except KafkaException as error:
        raise Fatal(
            f"cannot reach the broker at {stack.brokers.servers}: {reason_of(error)}"
        ) from None
    return Connections(
        bootstrap_servers=stack.brokers,
        mongodb_uri=stack.mongodb_uri,
        mongodb_database=settings.mongodb_database,
        incarnation_id=incarnation,
        one_record_per_batch=stack.one_record_per_batch,
        signer=stack.signer,
    )


def trainer_parts(
    settings: PlatformSettings, stack: Stack, db: Any, opened: Shared | None = None
) -> TrainerParts:
    """What the trainer consumer needs, or :class:`Fatal` on bad settings or a missing model.

    ``opened``: the store and embedder of the process it runs in (``up --with-trainer``),
    which its evaluations search.
    """
    from llm.models import BUNDLED_MODEL_ID, ModelNotFound, resolve
    from llm.settings import LLMSettings
    from trainer.consumer import TrainerParts
    from trainer.settings import TrainSettings

    try:
        llm = LLMSettings()
        train = TrainSettings()
        config = train.config(resolve(llm.model, settings.home))
    except ValidationError as error:
        raise _first_reason("training", error) from None
    except ModelNotFound as error:
        raise Fatal(str(error)) from None
    return TrainerParts(
        bootstrap_servers=stack.brokers,
        one_record_per_batch=stack.one_record_per_batch,
        signer=stack.signer,
        db=db,
        adapters_root=settings.home / "adapters",
        snapshots_root=settings.home / "snapshots",
        config=config,
        base_model_name=llm.model or BUNDLED_MODEL_ID,
        evaluate=training_evaluator(settings, db, train, config.base_model, opened),
    )


def training_evaluator(
    settings: PlatformSettings,
    db: Any,
    train: TrainSettings,
    base_model: str,
    opened: Shared | None = None,
) -> Evaluate | None:
    """Each new adapter's evaluation before it may be promoted; None when turned off."""
    from trainer.evaluation import evaluator

    if train.eval_samples == 0:
        return None
    return evaluator(
        db,
        evaluation_retrieval(settings, opened),
        base_model=base_model,
        samples=train.eval_samples,
        max_new_tokens=train.eval_max_new_tokens,
    )


def evaluation_retrieval(
    settings: PlatformSettings, opened: Shared | None = None, *, busy: str | None = None
) -> Callable[[], Retrieval]:
    """How an evaluation searches the author's passages, decided when it starts.

    The store this process holds (``opened``, left open); else a running `serve`/`up` on
    this home, through its API (it holds the store); else the store, opened for the
    evaluation and closed after it (a local store another process holds: ``busy`` as a
    :class:`Fatal` sentence, or :class:`~vectorstore.store.StoreBusy` without it).
    """
    from trainer.evaluate import StoreRetrieval

    def retrieval() -> Retrieval:
        if opened is not None:
            return live.Borrowed(StoreRetrieval(opened.store, opened.embedder))
        running = live.live_server(settings.home)
        if running is not None and settings.qdrant_url is None:
            configured = serving_settings().api_key
            secret = configured.get_secret_value() if configured is not None else None
            return live.LiveRetrieval(running, live.cli_key(settings.home, secret))
        embedder = load_embedder(ingest_settings())
        return StoreRetrieval(open_store(settings, embedder, busy=busy), embedder)

    return retrieval


@dataclass
class Shared:
    """What every part of one process shares: one embedder, one store, one warehouse client."""

    embedder: Embedder
    store: VectorStore
    client: MongoClient[warehouse.Document]
    db: Database[warehouse.Document]


@contextmanager
def shared(
    settings: PlatformSettings, stack: Stack, ingest: IngestSettings, *, busy: str = ""
) -> Iterator[Shared]:
    """The embedder, store and warehouse client of one process, closed on the way out."""
    embedder = load_embedder(ingest)
    store = open_store(settings, embedder, busy=busy)
    client = warehouse.connect(stack.mongodb_uri)
    try:
        yield Shared(embedder, store, client, client[settings.mongodb_database])
    finally:
        client.close()
        store.close()


def serving_parts(
    settings: PlatformSettings,
    stack: Stack,
    serving: ServingSettings,
    opened: Shared,
    backend: Backend,
) -> Parts:
    from serving.server import Parts

    return Parts(
        bootstrap_servers=stack.brokers,
        one_record_per_batch=stack.one_record_per_batch,
        db=opened.db,
        store=opened.store,
        embedder=opened.embedder,
        backend=backend,
        home=settings.home,
        settings=serving,
        signer=stack.signer,
    )


# -- the supervised parts ----------------------------------------------------------------------


def ingest_part(
    settings: PlatformSettings, stack: Stack, ingest: IngestSettings, opened: Shared
) -> Part:
    """The ingestion dataflow, following twin.raw-documents, sharing this process's store."""
    from streams.run import check_chunk_size
    from streams.run import run as run_dataflow

    try:
        check_chunk_size(ingest, opened.embedder)
    except ValueError as error:
        raise Fatal(str(error)) from None
    wiring = connections(settings, stack)

    def follow(stop: threading.Event, ready: Ready) -> None:
        # Bytewax says nothing when it has started: ready once what it reads and writes
        # answers (a broker or warehouse that is down is this part's failure, retried).
        kafka.partition_count(wiring.bootstrap_servers, RAW_DOCUMENTS.name)
        opened.db.command("ping")
        ready()
        run_dataflow(
            wiring,
            ingest,
            home=settings.home,
            until_idle=False,
            embedder=opened.embedder,
            store=opened.store,
            stop=stop,
        )
        if not stop.is_set():
            raise RuntimeError("the dataflow ended while it should follow the topic")

    return threaded("ingest", follow)


def trainer_part(parts: TrainerParts, say: Say) -> Part:
    """The trainer consumer: one snapshot at a time; stopping waits for its step."""
    from trainer.consumer import run as run_trainer

    def follow(stop: threading.Event, ready: Ready) -> None:
        run_trainer(
            parts, stop, on_adapter=lambda a: say(f"adapter {a.adapter_id}"), on_ready=ready
        )

    # A training step on a CPU takes seconds; the stopped run resumes from its checkpoint.
    return threaded("trainer", follow, stop_timeout_s=60.0)


class Service:
    """The retrieval consumer and the API (plus what `up` adds) over one set of parts."""

    def __init__(self, parts: Parts, keys: ApiKeys, supervisor: Supervisor) -> None:
        self.parts = parts
        self.keys = keys
        self.supervisor = supervisor
        self.consumer: Any = None  # the running RetrievalConsumer, replaced on each restart
        self.announced = False
        # What runs beside the parts (the `up` announcement), cancelled when they stop.
        self.tasks: list[asyncio.Future[None]] = []

    def consumer_part(self) -> Part:
        from serving.server import run_consumer

        def started(consumer: Any) -> None:
            self.consumer = consumer

        async def run(ready: Ready) -> None:
            await run_consumer(self.parts, ready, on_start=started)

        return Part("consumer", run)

    def api_part(self, listener: socket.socket, host: str, on_url: Callable[[str], None]) -> Part:
        from serving.server import run_api

        async def run(ready: Ready) -> None:
            # uvicorn closes the sockets it serves on: each attempt gets a copy of the one
            # bound before anything loaded (a port in use is a sentence at once, and a
            # restart never loses the port to another process).
            await run_api(
                self.parts,
                self.keys,
                listener.dup(),
                host=host,
                # /healthz: this process can answer a generation (what gates its traffic).
                ready_check=lambda: self.supervisor.ready("consumer", "api"),
                report=self.supervisor.report,
                ready=ready,
                on_url=on_url,
            )

        return Part("api", run)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or :class:`Fatal` saying why it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise Fatal(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.setblocking(False)
    return listener


def run_supervised(
    supervisor: Supervisor,
    parts: list[Part],
    *,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``parts`` until Ctrl-C, SIGTERM or a fatal part (raised as :class:`Fatal`).

    ``cleanup`` is awaited last, in the same loop (the backend's connections).
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS} if signals else {}
        # One path for Ctrl-C, SIGTERM and a fatal part: the supervisor's stop (a second
        # signal stops waiting for the parts).
        for sig in previous:
            loop.add_signal_handler(sig, supervisor.stop)
        try:
            await supervisor.run(parts)
        finally:
            if cleanup is not None:
                await cleanup()
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)  # Ctrl-C again during what follows (`up`'s stack)

    asyncio.run(main())


def serve(
    settings: PlatformSettings,
    stack: Stack,
    serving: ServingSettings,
    keys: ApiKeys,
    *,
    host: str,
    port: int,
    ingest: bool,
    trainer: bool,
    say: Say,
    on_url: Callable[[str, Service], Awaitable[None] | None],
) -> None:
    """`serve` and `up`: the parts of the twin in this process, until stopped."""
    listener = bind(host, port)
    try:
        ingesting = ingest_settings()
        with shared(
            settings,
            stack,
            ingesting,
            busy="another process (an `ingest`) holds the vector store: stop it first; "
            "serve runs the ingestion dataflow itself",
        ) as opened:
            say("loading the model…")
            backend = load_backend(settings)
            supervisor = Supervisor(policy(settings), say=say)
            service = Service(
                serving_parts(settings, stack, serving, opened, backend), keys, supervisor
            )

            def reached(url: str) -> None:
                record(url)  # from now on `status`, `search` and `generate` come here
                if not service.announced:  # a restarted API has the same URL
                    service.announced = True
                    task = asyncio.ensure_future(announce(url))
                    task.add_done_callback(said_if_failed)
                    service.tasks.append(task)

            def said_if_failed(task: asyncio.Future[None]) -> None:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    say(f"the twin is up, but saying so failed: {reason_of(error)}")

            async def announce(url: str) -> None:
                # Once every part is up: the consumer joins its group after the API listens.
                while not supervisor.ready():
                    await asyncio.sleep(0.05)
                pending = on_url(url, service)
                if pending is not None:
                    await pending

            # In the order they depend on each other; stopped the other way round: the API
            # drains its streams while the consumer still answers them.
            parts = [ingest_part(settings, stack, ingesting, opened)] if ingest else []
            if trainer:
                parts.append(trainer_part(trainer_parts(settings, stack, opened.db, opened), say))
            parts += [service.consumer_part(), service.api_part(listener, host, reached)]

            async def cleanup() -> None:
                for task in service.tasks:
                    task.cancel()
                await asyncio.gather(*service.tasks, return_exceptions=True)
                await backend.aclose()

            with live.recorded(settings.home) as record:
                run_supervised(supervisor, parts, cleanup=cleanup)
    finally:
        listener.close()


def ingest(settings: PlatformSettings, stack: Stack, say: Say) -> None:
    """`ingest`: the dataflow alone, supervised, following the topic until stopped."""
    ingesting = ingest_settings()
    with shared(settings, stack, ingesting, busy="") as opened:
        supervisor = Supervisor(policy(settings), say=say)
        run_supervised(supervisor, [ingest_part(settings, stack, ingesting, opened)])


def ingest_until_idle(settings: PlatformSettings, stack: Stack, say: Say) -> None:
    """`ingest --until-idle`: run the dataflow to the end of each partition, or wait for the
    dataflow that holds the store (a `serve`, `up` or `ingest`) to get there."""
    from streams import lag
    from streams.run import run as run_dataflow
    from vectorstore.store import StoreBusy, in_use_elsewhere

    ingesting = ingest_settings()
    embedder = load_embedder(ingesting)
    wiring = connections(settings, stack)
    while True:
        try:
            store = open_store(settings, embedder)
        except StoreBusy:
            pass
        else:
            with store:
                try:
                    run_dataflow(
                        wiring,
                        ingesting,
                        home=settings.home,
                        until_idle=True,
                        embedder=embedder,
                        store=store,
                    )
                except ValueError as error:  # settings that cannot work with this model
                    raise Fatal(str(error)) from None
            return
        say("a running dataflow owns the vector store: waiting for it to catch up")
        with warehouse_db(settings, stack) as db:
            if lag.wait_until_caught_up(
                wiring.bootstrap_servers,
                db,
                wiring.incarnation_id,
                still_running=lambda: in_use_elsewhere(settings.qdrant_location),
            ):
                return
        say("that dataflow stopped: running this one")


def trainer(settings: PlatformSettings, stack: Stack, say: Say) -> None:
    """`trainer`: the trainer consumer alone, supervised, until stopped."""
    with warehouse_db(settings, stack) as db:
        parts = trainer_parts(settings, stack, db)
        say("training each new snapshot; Ctrl-C stops")
        run_supervised(Supervisor(policy(settings), say=say), [trainer_part(parts, say)])


@asynccontextmanager
async def consumer_unless_served(
    settings: PlatformSettings, stack: Stack, serving: ServingSettings
) -> AsyncIterator[None]:
    """`generate`: nothing when a `serve` runs on this home; else a retrieval consumer here."""
    if live.live_server(settings.home) is not None:
        yield
        return
    from serving.server import JOIN_TIMEOUT_S, build_consumer

    with shared(
        settings,
        stack,
        ingest_settings(),
        busy="a running `ingest` holds the vector store: start `llm-twin serve` instead "
        "(it ingests too), then generate through it",
    ) as opened:
        backend = load_backend(settings)
        consumer, _ = build_consumer(serving_parts(settings, stack, serving, opened, backend))
        try:
            await consumer.start()
            try:
                try:
                    await asyncio.wait_for(consumer.joined.wait(), JOIN_TIMEOUT_S)
                except TimeoutError:
                    raise Fatal(
                        f"the retrieval consumer got no partitions in {JOIN_TIMEOUT_S:g}"
                        " s: is the broker answering? (`llm-twin infra status`)"
                    ) from None
                yield
            finally:
                await consumer.stop()
        finally:
            await backend.aclose()
