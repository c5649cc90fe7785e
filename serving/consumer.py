"""The retrieval consumer: a Faust agent on ``twin.generation.requests``.

Each request is answered in a task of its own, so one worker handles many at
once; a ``Cancel`` (same key, so the same partition and worker) cancels that
task. The request's offset is acknowledged only once its answer has gone out:
if the worker dies mid-request, the group gives the partition to another
worker, which answers the request again as a new ``attempt`` (the warehouse
counts attempts, and remembers answered requests so a redelivery after the
answer is not answered twice). Reply events go to the partition the request
names in ``reply_to``, in order, from one producer.

With a signing key, a request, cancel or adapter notice that a holder of the
key did not sign is dead-lettered unread; so is a request naming a reply
partition the topic does not have (it could never be answered, and its
offset would hold back every request behind it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from infra import kafka, warehouse
from infra.ports import free_port
from schemas import signing
from schemas.dead_letters import DeadLetter
from schemas.generation import (
    Cancel,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    ReplyEvent,
)
from schemas.serde import DecodeError, decode, encode
from schemas.signing import SignatureError, Signer
from schemas.topics import DEAD_LETTERS, GENERATION_REQUESTS, GENERATION_TOKENS, MODELS
from schemas.training import AdapterRegistered
from serving.answer import Answerer
from serving.faust_kafka import LowLatencyApp, faust_credentials

log = logging.getLogger(__name__)

APP_ID = "llm-twin-serving"
# On stop, how long answers in flight get to finish before they are left to a next attempt.
STOP_GRACE_S = 2.0
# How often a running consumer looks whether Faust marked it crashed.
_CRASH_CHECK_S = 0.5


class ConsumerLost(Exception):
    """The Faust app crashed without an exception of its own to say why."""


class RetrievalConsumer:
    """Owns the Faust app; ``start()``/``stop()`` run it inside the caller's event loop."""

    def __init__(
        self,
        bootstrap_servers: kafka.Brokers | str,
        answerer: Answerer,
        db: Database[warehouse.Document],
        *,
        datadir: Path,
        app_id: str = APP_ID,
        on_adapter: Callable[[AdapterRegistered], Awaitable[object]] | None = None,
        signer: Signer | None = None,
    ) -> None:
        self._brokers = kafka.brokers(bootstrap_servers)
        self._signer = signer
        self._reply_partitions = GENERATION_TOKENS.partitions
        self._answerer = answerer
        self._on_adapter = on_adapter
        self._db = db
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._cancelled: set[uuid.UUID] = set()
        self.joined = asyncio.Event()
        self.app = LowLatencyApp(
            app_id,
            broker=f"kafka://{self._brokers.servers}",
            broker_credentials=faust_credentials(self._brokers),
            datadir=str(datadir),
            # Faust binds a web port even with its web server off (measured): a free
            # one, so several workers fit on one machine.
            web_enabled=False,
            web_port=free_port(),
            # The topics are ours (infra up, docker compose): Faust declares none.
            topic_allow_declare=False,
            topic_disable_leader=True,
            # Measured: 6 s / 1 s gets a new member its partitions in ~3 s on Tansu.
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            # A group's first start reads requests already waiting; stale ones are
            # answered at once with deadline_exceeded.
            consumer_auto_offset_reset="earliest",
            producer_linger=0.0,
            # Stopping must not wait for unacknowledged requests (those cut off are
            # redelivered): Faust's default waits for them, forever.
            stream_wait_empty=False,
            broker_commit_interval=0.5,
        )
        self._requests = self.app.topic(
            GENERATION_REQUESTS.name, key_type=bytes, value_type=bytes, value_serializer="raw"
        )
        self._tokens = self.app.topic(
            GENERATION_TOKENS.name, key_type=bytes, value_type=bytes, value_serializer="raw"
        )
        self._dead_letters = self.app.topic(
            DEAD_LETTERS.name, key_type=bytes, value_type=bytes, value_serializer="raw"
        )
        self.app.agent(self._requests, name="answer-requests")(self._consume)
        if on_adapter is not None:
            models = self.app.topic(
                MODELS.name, key_type=bytes, value_type=bytes, value_serializer="raw"
            )
            self.app.agent(models, name="switch-adapters")(self._adapters)
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    async def start(self) -> None:
        # The topic as it is, not as the registry declares it: an operator may have
        # added partitions, and a request may name only one that exists.
        self._reply_partitions = await asyncio.to_thread(
            kafka.partition_count, self._brokers, GENERATION_TOKENS.name
        )
        await self.app.start()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        # Answers about to finish get ``grace_s`` (their bookkeeping and ack); the rest
        # stay unacknowledged: another worker, or this one restarted, answers them as a
        # new attempt.
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace_s)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.app.stop()

    async def crashed(self) -> BaseException:
        """Wait until the Faust app crashes (its consumer lost the broker, an agent died).

        Faust marks the app crashed and keeps running a shell of it; whoever runs
        this consumer decides what to do instead (the supervisor restarts it).
        """
        while not self.app.crashed:
            await asyncio.sleep(_CRASH_CHECK_S)
        reason = self.app.crash_reason
        return reason if isinstance(reason, Exception) else ConsumerLost(repr(reason))

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _on_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.joined.set()

    async def _consume(self, stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            try:
                self._verify(message)
                request = decode(GENERATION_REQUESTS, message.value)
            except (DecodeError, SignatureError) as error:
                await self._dead_letter(message, str(error), _stage(error))
                await stream.ack(event)
                continue
            if (
                isinstance(request, GenerationRequest)
                and request.reply_to.partition >= self._reply_partitions
            ):
                reason = (
                    f"reply_to.partition {request.reply_to.partition} does not exist: "
                    f"{GENERATION_TOKENS.name} has {self._reply_partitions} partitions"
                )
                await self._dead_letter(message, reason, "validate")
                await stream.ack(event)
                continue
            if isinstance(request, Cancel):
                self._cancel(request.request_id)
                await stream.ack(event)
                continue
            if request.request_id in self._tasks:  # a duplicate delivery of one in flight
                await stream.ack(event)
                continue
            task = asyncio.create_task(self._serve(request, stream, event))
            self._tasks[request.request_id] = task

    async def _adapters(self, stream: Any) -> None:
        """``twin.models``: each new adapter goes to the registry, which may activate it."""
        assert self._on_adapter is not None
        async for event in stream.events():
            try:
                self._verify(event.message)
                adapter = decode(MODELS, event.message.value)
            except (DecodeError, SignatureError) as error:
                await self._dead_letter(event.message, str(error), _stage(error))
                continue
            await self._on_adapter(adapter)

    async def _serve(self, request: GenerationRequest, stream: Any, event: Any) -> None:
        finished = False
        try:
            try:
                attempt = await asyncio.to_thread(
                    warehouse.begin_attempt, self._db, request.request_id, datetime.now(UTC)
                )
            except PyMongoError as error:  # answer anyway: a reply beats strict bookkeeping
                log.warning("cannot count attempts of %s: %s", request.request_id, error)
                attempt = 1
            if attempt is None:  # answered before a redelivery
                finished = True
                return

            async def emit(reply: ReplyEvent) -> None:
                await self._tokens.send(
                    key=str(request.request_id).encode(),
                    value=encode(reply),
                    partition=request.reply_to.partition,
                )

            try:
                await self._answerer.answer(request, attempt, emit)
            except asyncio.CancelledError:
                if request.request_id not in self._cancelled:
                    raise  # shutting down: left for the next attempt
                await emit(
                    ErrorEvent(
                        request_id=request.request_id,
                        attempt=attempt,
                        code=ErrorCode.CANCELLED,
                        message="cancelled by the client",
                    )
                )
            try:
                await asyncio.to_thread(
                    warehouse.finish_attempt, self._db, request.request_id, datetime.now(UTC)
                )
            except PyMongoError as error:
                log.warning("cannot record %s as answered: %s", request.request_id, error)
            finished = True
        finally:
            self._tasks.pop(request.request_id, None)
            self._cancelled.discard(request.request_id)
            if finished:
                await stream.ack(event)

    def _cancel(self, request_id: uuid.UUID) -> None:
        task = self._tasks.get(request_id)
        if task is not None and not task.done():
            self._cancelled.add(request_id)
            task.cancel()

    def _verify(self, message: Any) -> None:
        signing.verify(self._signer, message.topic, message.key, message.value, message.headers)

    async def _dead_letter(self, message: Any, reason: str, stage: str = "decode") -> None:
        letter = DeadLetter.for_message(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            stage=stage,
            reason=reason,
        )
        log.warning("rejected a message at %s/%s: %s", message.partition, message.offset, reason)
        await self._dead_letters.send(key=message.key, value=encode(letter))


def _stage(error: Exception) -> str:
    return "verify" if isinstance(error, SignatureError) else "decode"
