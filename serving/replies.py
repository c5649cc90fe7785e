"""The asking side of a generation: publish a request, stream its replies back.

A :class:`ReplyChannel` owns one partition of ``twin.generation.tokens`` (each
API process or CLI its own) and reads only that one, from its end
at the moment the channel opened. Every request it sends names that
partition in ``reply_to``; a background thread reads the partition and hands
each event to the request waiting for it (events of requests nobody here
waits for are dropped: a partition shared by accident still works).

Per request, the channel guarantees the caller one final event: the worker's
``done`` or ``error``, or, when the deadline passes first, an ``error`` with
``deadline_exceeded`` made here (and a ``Cancel`` sent so the worker stops).
A new ``attempt`` (the request was redelivered after its worker died) is
passed on as it comes; the caller restarts its text at seq 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from confluent_kafka import TopicPartition

from infra import kafka
from schemas.generation import (
    Cancel,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    ReplyEvent,
    ReplyTo,
)
from schemas.serde import DecodeError, decode
from schemas.signing import Signer
from schemas.topics import GENERATION_REQUESTS, GENERATION_TOKENS

log = logging.getLogger(__name__)

# How long one poll of the reply partition blocks: also how quickly close() returns.
_POLL_S = 0.05
# The worker notices a deadline itself; this much later, the channel gives up waiting.
DEADLINE_GRACE_S = 0.5


class PartitionClaim:
    """An exclusive claim on one reply partition among the processes sharing ``directory``.

    Held as a ``flock`` on ``<directory>/<n>.lock`` until released or the process
    ends. When every partition is claimed, one is shared: replies are matched by
    request id, so sharing costs reading others' events, never correctness.
    """

    def __init__(self, directory: Path, partitions: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._handle: IO[bytes] | None = None
        order = list(range(partitions))
        random.shuffle(order)  # processes starting together spread out
        for partition in order:
            handle = (directory / f"{partition}.lock").open("ab")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._handle = handle
            self.partition = partition
            return
        self.partition = order[0]
        log.warning("all %d reply partitions are claimed; sharing %d", partitions, order[0])

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _Waiter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[ReplyEvent] = asyncio.Queue()


class ReplyChannel:
    """Sends requests and routes their replies; one per process, shared by its requests."""

    def __init__(
        self, bootstrap_servers: kafka.Brokers | str, publisher: kafka.Publisher, partition: int
    ) -> None:
        self.partition = partition
        self._publisher = publisher
        self._waiters: dict[uuid.UUID, _Waiter] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._consumer = kafka.make_assigned_consumer(
            bootstrap_servers,
            "llm-twin-replies",
            # Partitions are assigned, not subscribed: the group id only names us.
            f"llm-twin-replies-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            fetch_wait_ms=5,
        )
        # Read from the end as it is now: every reply to a request sent from here on
        # lands after it. (An end computed short by Tansu's multi-record batches only
        # means a few old events are read and dropped.)
        _, end = self._consumer.get_watermark_offsets(
            TopicPartition(GENERATION_TOKENS.name, partition), timeout=10
        )
        self._consumer.assign([TopicPartition(GENERATION_TOKENS.name, partition, end)])
        self._thread = threading.Thread(target=self._read, name="llm-twin-replies", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._consumer.close()
        self._publisher.close()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                message = self._consumer.poll(_POLL_S)
            except Exception:  # a closed or failed consumer: the channel is done
                log.exception("reading replies failed")
                return
            self._publisher.producer.poll(0)  # delivery callbacks of sent requests
            if message is None or message.error() is not None:
                continue
            try:
                event = decode(GENERATION_TOKENS, message.value())
            except DecodeError as error:
                log.warning("undecodable reply at offset %s: %s", message.offset(), error)
                continue
            with self._lock:
                waiter = self._waiters.get(event.request_id)
            if waiter is not None:
                with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits
                    waiter.loop.call_soon_threadsafe(waiter.queue.put_nowait, event)

    def new_request(
        self,
        author: str,
        prompt: str,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.95,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        timeout_s: float = 120.0,
    ) -> GenerationRequest:
        now = datetime.now(UTC)
        return GenerationRequest(
            request_id=uuid.uuid4(),
            author=author,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            deadline=now + timedelta(seconds=timeout_s),
            reply_to=ReplyTo(partition=self.partition),
            created_at=now,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[ReplyEvent]:
        """Send ``request``; yield its events up to and including the one final event."""
        if request.reply_to.partition != self.partition:
            raise ValueError("the request's reply_to is not this channel's partition")
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            self._waiters[request.request_id] = waiter
        finished = False
        try:
            key = str(request.request_id)
            self._publisher.publish(GENERATION_REQUESTS, key, request)
            attempt = 0
            while True:
                remaining = (request.deadline - datetime.now(UTC)).total_seconds()
                try:
                    event = await asyncio.wait_for(
                        waiter.queue.get(), max(0.0, remaining) + DEADLINE_GRACE_S
                    )
                except TimeoutError:
                    yield ErrorEvent(
                        request_id=request.request_id,
                        attempt=max(attempt, 1),
                        code=ErrorCode.DEADLINE_EXCEEDED,
                        message="no answer before the deadline",
                    )
                    return
                if event.attempt < attempt:
                    continue  # a superseded attempt's late events
                attempt = event.attempt
                yield event
                if isinstance(event, DoneEvent | ErrorEvent):
                    finished = True
                    return
        finally:
            with self._lock:
                self._waiters.pop(request.request_id, None)
            if not finished:  # abandoned or timed out: the worker need not go on
                self.cancel(request.request_id)

    def cancel(self, request_id: uuid.UUID) -> None:
        self._publisher.publish(GENERATION_REQUESTS, str(request_id), Cancel(request_id=request_id))


def open_channel(
    bootstrap_servers: kafka.Brokers | str,
    home: Path,
    *,
    one_record_per_batch: bool,
    partition: int | None = None,
    signer: Signer | None = None,
) -> tuple[ReplyChannel, PartitionClaim | None]:
    """A channel on ``partition``, or on a partition claimed under ``home`` when None."""
    claim = None
    if partition is None:
        claim = PartitionClaim(home / "reply-partitions", GENERATION_TOKENS.partitions)
        partition = claim.partition
    publisher = kafka.Publisher(
        kafka.make_producer(
            bootstrap_servers, "llm-twin-requests", one_record_per_batch=one_record_per_batch
        ),
        signer,
    )
    return ReplyChannel(bootstrap_servers, publisher, partition), claim
