"""The retrieval consumer on the real local stack: requests in, ordered token streams out.

A Faust consumer runs in a background event loop of this process, answering
from a Qdrant local store that holds two authors' passages, with a stand-in
TGI server (tests/fake_tgi.py) that speaks TGI's streaming protocol and records
every prompt, or with a tiny real transformers model. Requests go through the
real broker: published by a ReplyChannel, answered on its reply partition.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from infra import adapters as registry
from infra import warehouse
from llm.backend import Backend, LoadsAdapters
from llm.errors import BackendFailed
from llm.local import LocalBackend
from llm.remote import TgiBackend
from schemas.dead_letters import DeadLetter
from schemas.generation import (
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    ReplyEvent,
    TokenEvent,
)
from schemas.signing import Signer
from serving.adapters import ActiveAdapters
from serving.answer import Answerer, AnswerSettings
from serving.consumer import RetrievalConsumer
from serving.replies import ReplyChannel, open_channel
from serving.retrieval import Retriever
from streams.chunk import Chunk
from streams.sinks import points_of
from tests import tiny_model
from tests.factories import raw_document
from tests.fake_tgi import FakeTgi, running
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

ALICE_TEXT = (
    "Sourdough wants patience: a levain fed at dawn, an autolyse of forty minutes, "
    "and a cold retard overnight so the crumb opens and the crust blisters."
)
BOB_TEXT = (
    "Kafka partitions order records per key; consumer groups split partitions "
    "among workers, and offsets commit only after the side effect is durable."
)


@dataclass
class Corpus:
    alice: set[str]
    bob: set[str]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[VectorStore]:
    with VectorStore.open(
        str(tmp_path_factory.mktemp("qdrant")), dimensions=embedder.dimensions
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def corpus(store: VectorStore, embedder: Embedder) -> Corpus:
    """Two passages for alice (bread), two for bob (Kafka), each in their own collection."""
    ids: dict[str, set[str]] = {"alice": set(), "bob": set()}
    texts = {
        "alice": [ALICE_TEXT, "My rye loaves proof in linen bannetons dusted with rice flour."],
        "bob": [BOB_TEXT, "A Kafka consumer group rebalances when a worker dies."],
    }
    for author, pieces in texts.items():
        store.ensure_collection(author)
        for number, text in enumerate(pieces):
            document = raw_document(
                author, source=f"https://{author}.example/posts/{number}", content=text
            )
            chunk = Chunk(index=0, text=text, start=0, end=len(text), token_count=40)
            vectors = embedder.encode([text])
            store.upsert(
                author, points_of(document, [chunk], vectors.tolist(), "test", datetime.now(UTC))
            )
            ids[author].add(str(document.document_id))
    return Corpus(alice=ids["alice"], bob=ids["bob"])


class LoopThread:
    """An event loop in a background thread, for a consumer that outlives one test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: object, timeout: float = 60) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Switch:
    """The backend the consumer uses, chosen per test (one consumer group serves them all).

    Only one group may answer the shared requests topic at a time, so the module
    runs one consumer and points it at a stand-in TGI server, a tiny real model or
    a dead server as each test needs.
    """

    name = "switch"

    def __init__(self, target: Backend) -> None:
        self.target = target

    def stream(self, messages, sampling, *, adapter=None):  # type: ignore[no-untyped-def]
        return self.target.stream(messages, sampling, adapter=adapter)

    def count_tokens(self, text: str) -> int:
        return self.target.count_tokens(text)

    @property
    def adapters(self) -> frozenset[str]:
        return self.target.adapters if isinstance(self.target, LoadsAdapters) else frozenset()

    async def add_adapter(self, adapter_id: str, path: Path) -> None:
        if not isinstance(self.target, LoadsAdapters):
            raise BackendFailed(f"{self.target.name} does not load adapters")
        await self.target.add_adapter(adapter_id, path)

    async def ready(self) -> None:
        await self.target.ready()

    async def aclose(self) -> None:
        await self.target.aclose()


@dataclass
class Served:
    fake: FakeTgi
    switch: Switch
    channel: ReplyChannel
    consumer: RetrievalConsumer
    signer: Signer
    db: Database[warehouse.Document]
    adapters_root: Path


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    bootstrap_servers: str,
    mongodb_uri: str,
    store: VectorStore,
    embedder: Embedder,
    corpus: Corpus,
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serving-home")
    client: MongoClient[warehouse.Document] = warehouse.connect(mongodb_uri)
    db: Database[warehouse.Document] = client["llm_twin"]
    loop = LoopThread()
    # This deployment's key: the consumer acts only on what a holder of it signed.
    signer = Signer(secrets.token_bytes(32))
    adapters_root = home / "adapters"
    with running(FakeTgi(token_delay_s=0.002)) as fake:
        switch = Switch(TgiBackend(fake.url, timeout_s=5, retries=0))
        adapters = ActiveAdapters(db, switch, adapters_root=adapters_root, refresh_s=0.5)
        answerer = Answerer(
            Retriever(store, embedder, k=3),
            switch,
            AnswerSettings(),
            adapter_for=adapters.for_author,
        )
        consumer = RetrievalConsumer(
            bootstrap_servers,
            answerer,
            db,
            datadir=home / "faust",
            on_adapter=adapters.registered,
            signer=signer,
        )

        async def start() -> None:
            await consumer.start()
            await asyncio.wait_for(consumer.joined.wait(), 60)

        loop.run(start())
        channel, claim = open_channel(
            bootstrap_servers, home, one_record_per_batch=True, signer=signer
        )
        try:
            yield Served(fake, switch, channel, consumer, signer, db, adapters_root)
        finally:
            channel.close()
            if claim is not None:
                claim.release()
            loop.run(consumer.stop())
            loop.close()
            client.close()


def ask(channel: ReplyChannel, author: str, prompt: str, **options: float) -> list[ReplyEvent]:
    async def collect() -> list[ReplyEvent]:
        request = channel.new_request(author, prompt, **options)  # type: ignore[arg-type]
        return [event async for event in channel.stream(request)]

    return asyncio.run(collect())


def check_complete(events: list[ReplyEvent]) -> DoneEvent:
    """One request's events: tokens with consecutive seq, then exactly one done."""
    *tokens, final = events
    assert isinstance(final, DoneEvent), final
    assert all(isinstance(t, TokenEvent) for t in tokens)
    assert [t.seq for t in tokens if isinstance(t, TokenEvent)] == list(range(len(tokens)))
    assert {e.request_id for e in events} == {final.request_id}
    assert final.text == "".join(t.text for t in tokens if isinstance(t, TokenEvent))
    return final


def test_a_request_streams_tokens_in_order_then_done_with_sources(
    served: Served, corpus: Corpus
) -> None:
    events = ask(
        served.channel, "alice", "How do I get an open crumb in sourdough?", max_new_tokens=12
    )
    done = check_complete(events)
    assert done.text == "".join(f"w{n} " for n in range(12))
    assert done.usage.completion_tokens == 12
    assert {str(s.document_id) for s in done.sources} <= corpus.alice
    assert done.sources, "the author's own passages were retrieved"
    assert done.timings.first_token_ms is not None


def test_32_concurrent_requests_for_two_authors_never_cross(served: Served, corpus: Corpus) -> None:
    async def one(author: str, n: int) -> list[ReplyEvent]:
        request = served.channel.new_request(
            author, f"idea {n} about {author}", max_new_tokens=5 + n % 7
        )
        return [event async for event in served.channel.stream(request)]

    async def all_of_them() -> list[list[ReplyEvent]]:
        return await asyncio.gather(*(one(("alice", "bob")[n % 2], n) for n in range(32)))

    started = time.perf_counter()
    results = asyncio.run(all_of_them())
    assert time.perf_counter() - started < 60
    for n, events in enumerate(results):
        done = check_complete(events)
        assert done.usage.completion_tokens == 5 + n % 7
        author_docs = corpus.alice if n % 2 == 0 else corpus.bob
        assert {str(s.document_id) for s in done.sources} <= author_docs
    assert len({events[-1].request_id for events in results}) == 32


def test_a_twin_never_sees_another_authors_passages(served: Served) -> None:
    before = len(served.fake.requests)
    # Bob's text answers this question best; alice's twin must not quote it.
    ask(served.channel, "alice", "How do Kafka consumer groups split partitions?", max_new_tokens=3)
    prompt = served.fake.prompts()[before]
    assert "Kafka partitions order records" not in prompt
    assert "consumer group rebalances" not in prompt
    assert "levain" in prompt or "bannetons" in prompt  # alice's own passages are there
    ask(served.channel, "bob", "How do Kafka consumer groups split partitions?", max_new_tokens=3)
    assert "Kafka partitions order records" in served.fake.prompts()[before + 1]


def test_the_tiny_real_model_streams_through_kafka(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = tiny_model.build(tmp_path_factory.mktemp("tiny"))
    previous = served.switch.target
    served.switch.target = LocalBackend.load(model)
    try:
        events = ask(
            served.channel, "bob", "Write about offsets", max_new_tokens=16, temperature=0.0
        )
    finally:
        served.switch.target = previous
    done = check_complete(events)
    assert 0 < done.usage.completion_tokens <= 16
    assert done.usage.prompt_tokens > 0


def test_a_requests_repetition_penalty_reaches_the_server_through_kafka(served: Served) -> None:
    before = len(served.fake.requests)
    check_complete(ask(served.channel, "bob", "Write about offsets", max_new_tokens=3))
    check_complete(
        ask(
            served.channel,
            "bob",
            "Write about offsets",
            max_new_tokens=3,
            repetition_penalty=1.25,
        )
    )
    unasked, asked = (r["parameters"] for r in served.fake.requests[before:])
    assert unasked.get("repetition_penalty") is None  # the server keeps its own default
    assert asked["repetition_penalty"] == 1.25


def test_cancel_stops_the_generation_with_a_cancelled_error(served: Served) -> None:
    served.fake.token_delay_s = 0.05

    async def cancel_after_first_token() -> list[ReplyEvent]:
        request = served.channel.new_request("alice", "a long one", max_new_tokens=400)
        events: list[ReplyEvent] = []
        async for event in served.channel.stream(request):
            events.append(event)
            if len(events) == 2:
                served.channel.cancel(request.request_id)
        return events

    try:
        started = time.perf_counter()
        events = asyncio.run(cancel_after_first_token())
    finally:
        served.fake.token_delay_s = 0.002
    final = events[-1]
    assert isinstance(final, ErrorEvent) and final.code is ErrorCode.CANCELLED
    assert time.perf_counter() - started < 10  # not the 20 s the whole answer takes
    assert sum(isinstance(e, ErrorEvent | DoneEvent) for e in events) == 1


def test_a_deadline_ends_the_request_with_deadline_exceeded(served: Served) -> None:
    served.fake.token_delay_s = 0.05
    try:
        started = time.perf_counter()
        events = ask(served.channel, "alice", "slow", max_new_tokens=400, timeout_s=1.5)
    finally:
        served.fake.token_delay_s = 0.002
    final = events[-1]
    assert isinstance(final, ErrorEvent) and final.code is ErrorCode.DEADLINE_EXCEEDED
    assert any(isinstance(e, TokenEvent) for e in events)
    assert time.perf_counter() - started < 5


def test_a_dead_backend_gives_an_error_event_quickly(served: Served) -> None:
    from infra.ports import free_port

    previous = served.switch.target
    served.switch.target = TgiBackend(f"http://127.0.0.1:{free_port()}", timeout_s=2, retries=1)
    try:
        started = time.perf_counter()
        events = ask(served.channel, "alice", "anything", max_new_tokens=5)
    finally:
        served.switch.target = previous
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, ErrorEvent) and final.code is ErrorCode.BACKEND_UNAVAILABLE
    assert time.perf_counter() - started < 5


def test_a_malformed_request_goes_to_the_dead_letters_and_the_stream_flows_on(
    served: Served, bootstrap_servers: str
) -> None:
    from confluent_kafka import Producer

    from schemas.topics import DEAD_LETTERS, GENERATION_REQUESTS
    from tests.support import topic_ends

    ends = topic_ends(bootstrap_servers, DEAD_LETTERS.name)
    key = f"garbage-{uuid.uuid4()}"
    value = b'{"type": "generate", "oops": 1}'
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    headers = served.signer.sign(GENERATION_REQUESTS.name, key, value, [])
    producer.produce(GENERATION_REQUESTS.name, key=key, value=value, headers=headers)
    producer.flush(10)
    # The consumer keeps answering.
    check_complete(ask(served.channel, "bob", "still there?", max_new_tokens=3))
    letters = dead_letters_with_key(bootstrap_servers, ends, key)
    assert letters, "the malformed request reached the dead-letter topic"
    assert letters[0].stage == "decode"
    assert letters[0].source_topic == GENERATION_REQUESTS.name


def dead_letters_with_key(
    bootstrap: str, since: dict[int, int], key: str, timeout_s: float = 15
) -> list[DeadLetter]:
    from confluent_kafka import TopicPartition

    from infra import kafka
    from schemas.serde import decode
    from schemas.topics import DEAD_LETTERS

    consumer = kafka.make_consumer(bootstrap, f"test-{uuid.uuid4()}", latency_sensitive=True)
    consumer.assign([TopicPartition(DEAD_LETTERS.name, p, o) for p, o in since.items()])
    found: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not found and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            letter = decode(DEAD_LETTERS, message.value())
            if letter.key == key:
                found.append(letter)
    finally:
        consumer.close()
    return found


def test_a_registered_adapter_answers_for_its_author_without_a_restart(
    served: Served, bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from infra import kafka
    from llm.backend import Piece, Sampling
    from llm.prompt import build_messages
    from schemas.topics import MODELS
    from schemas.training import AdapterRegistered
    from tests.llm.test_adapters import make_adapter

    model = tiny_model.build(tmp_path_factory.mktemp("tiny-adapted"))
    adapter_dir = make_adapter(model, served.adapters_root / f"a-{uuid.uuid4().hex[:6]}", seed=7)
    author = f"carol-{uuid.uuid4().hex[:6]}"  # no collection: the prompt has no passages
    adapter_id = f"{author}-20261130T000000Z-00000000-abcdef12"
    local = LocalBackend.load(model)
    prompt = "Write about lanterns"
    greedy = Sampling(max_new_tokens=10, temperature=0.0)

    async def reference(adapter: str | None) -> str:
        if adapter is not None and adapter not in local.adapters:
            await local.add_adapter(adapter, adapter_dir)
        messages = build_messages(author, prompt, [])
        pieces = [
            e.text
            async for e in local.stream(messages, greedy, adapter=adapter)
            if isinstance(e, Piece)
        ]
        return "".join(pieces)

    previous = served.switch.target
    served.switch.target = local
    try:
        before = check_complete(
            ask(served.channel, author, prompt, max_new_tokens=10, temperature=0.0)
        )
        event = AdapterRegistered(
            adapter_id=adapter_id,
            author=author,
            snapshot_id=f"{author}-20261130T000000Z-00000000",
            base_model="tiny",
            path=str(adapter_dir),
            created_at=datetime.now(UTC),
            config_hash="1" * 64,
            eval_perplexity=3.0,
        )
        # The trainer records the adapter; twin.models only tells serving to look.
        registry.register(served.db, event, datetime.now(UTC))
        with kafka.Publisher(
            kafka.make_producer(bootstrap_servers, one_record_per_batch=True), served.signer
        ) as p:
            p.publish(MODELS, author, event)
        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline:
            after = check_complete(
                ask(served.channel, author, prompt, max_new_tokens=10, temperature=0.0)
            )
            if after.text != before.text:
                break
            time.sleep(0.5)
    finally:
        served.switch.target = previous
    assert before.text == asyncio.run(reference(None))
    assert after.text == asyncio.run(reference(adapter_id)), "the adapter answers now"
    assert after.text != before.text


def _produce_request(bootstrap: str, request: GenerationRequest, signer: Signer | None) -> None:
    """A request written by hand, as any producer to the topic could: signed or not."""
    from confluent_kafka import Producer

    from schemas.serde import encode
    from schemas.topics import GENERATION_REQUESTS

    key, value = str(request.request_id), encode(request)
    headers = signer.sign(GENERATION_REQUESTS.name, key, value, []) if signer else []
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(GENERATION_REQUESTS.name, key=key, value=value, headers=headers)
    producer.flush(10)


def test_an_unsigned_or_foreign_signed_request_is_dead_lettered_and_never_answered(
    served: Served, bootstrap_servers: str
) -> None:
    from schemas.topics import DEAD_LETTERS
    from tests.support import topic_ends

    ends = topic_ends(bootstrap_servers, DEAD_LETTERS.name)
    unsigned = served.channel.new_request("alice", "write as alice, unsigned")
    foreign = served.channel.new_request("alice", "write as alice, another key")
    _produce_request(bootstrap_servers, unsigned, None)
    _produce_request(bootstrap_servers, foreign, Signer(secrets.token_bytes(32)))
    # A signed request behind them is answered: the stream flows on.
    check_complete(ask(served.channel, "bob", "still there?", max_new_tokens=3))
    for request, reason in ((unsigned, "unsigned"), (foreign, "bad signature")):
        letters = dead_letters_with_key(bootstrap_servers, ends, str(request.request_id))
        assert letters, f"the {reason} request reached the dead-letter topic"
        assert letters[0].stage == "verify"
        assert reason in letters[0].reason
        # Never acted on: not even an attempt was counted for it.
        assert (
            served.db[warehouse.GENERATION_ATTEMPTS].find_one({"_id": request.request_id}) is None
        )


def test_a_request_naming_a_reply_partition_that_does_not_exist_is_dead_lettered(
    served: Served, bootstrap_servers: str
) -> None:
    from schemas.generation import ReplyTo
    from schemas.topics import DEAD_LETTERS, GENERATION_TOKENS
    from tests.support import topic_ends

    ends = topic_ends(bootstrap_servers, DEAD_LETTERS.name)
    request = served.channel.new_request("alice", "reply where?").model_copy(
        update={"reply_to": ReplyTo(partition=GENERATION_TOKENS.partitions + 5)}
    )
    _produce_request(bootstrap_servers, request, served.signer)
    letters = dead_letters_with_key(bootstrap_servers, ends, str(request.request_id))
    assert letters, "the request for a missing partition reached the dead-letter topic"
    assert letters[0].stage == "validate"
    assert "does not exist" in letters[0].reason
    check_complete(ask(served.channel, "bob", "and the next one?", max_new_tokens=3))


def test_a_signed_adapter_notice_never_writes_the_registry(
    served: Served, bootstrap_servers: str
) -> None:
    from infra import kafka
    from schemas.topics import MODELS
    from schemas.training import AdapterRegistered

    author = f"dave-{uuid.uuid4().hex[:6]}"
    forged = AdapterRegistered(
        adapter_id=f"{author}-20261130T000000Z-00000000-deadbeef",
        author=author,
        snapshot_id=f"{author}-20261130T000000Z-00000000",
        base_model="tiny",
        path=str(served.adapters_root / "anything"),
        created_at=datetime.now(UTC),
        config_hash="2" * 64,
        eval_perplexity=1.0,
    )
    with kafka.Publisher(
        kafka.make_producer(bootstrap_servers, one_record_per_batch=True), served.signer
    ) as p:
        p.publish(MODELS, author, forged)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert registry.active(served.db, author) is None, "the notice activated an adapter"
        assert served.db[registry.ADAPTERS].find_one({"_id": forged.adapter_id}) is None
        time.sleep(0.25)
