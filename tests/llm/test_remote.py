"""The HTTP backends against a fake server on loopback that speaks TGI's and OpenAI's streams.

The fake answers each request from a script (status, tokens, a mid-stream error,
a dropped connection, a stall) and records what it received, so the tests see
both sides: what the twin sent and what it made of the answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from transformers import AutoTokenizer

from llm.backend import ChatMessage, Event, Finish, Piece, Sampling
from llm.errors import BackendError, BackendFailed, BackendUnavailable
from llm.remote import OpenAIBackend, TgiBackend, chat_template_prompt, plain_prompt
from tests.tiny_model import build

API_KEY = "hf_SECRET-test-key-0123456789"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You are the author's twin."},
    {"role": "user", "content": "Why did we move ingestion to Kafka?"},
]
GREEDY = Sampling(max_new_tokens=16, temperature=0.0)
# TGI's messages for its error types.
TGI_ERRORS = {
    "generation": "Request failed during generation: CUDA out of memory",
    "overloaded": "Model is overloaded",
}
Protocol = Literal["tgi", "openai"]
PROTOCOLS: tuple[Protocol, ...] = ("tgi", "openai")


@dataclass(frozen=True)
class Answer:
    """How the fake answers one request."""

    status: int = 200
    # Anything but 200: the body, JSON when a dict.
    body: dict[str, Any] | str = ""
    tokens: tuple[str, ...] = ("Kafka", " keeps", " every", " document")
    # TGI's reasons; the OpenAI side says "stop" for both of the last two.
    finish: Literal["length", "eos_token", "stop_sequence"] = "length"
    # After this many tokens the stream ends early, as ``then`` says.
    cut_after: int | None = None
    then: Literal["error", "drop", "stall"] = "error"
    error_type: str = "generation"
    usage: bool = True


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeServer:
    url: str = ""
    script: list[Answer] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def reset(self, *answers: Answer) -> None:
        self.script = list(answers)
        self.received = []

    async def _next(self, request: Request) -> Answer:
        body = await request.json()
        self.received.append(Received(request.url.path, body, dict(request.headers)))
        # The last answer of the script repeats.
        return self.script.pop(0) if len(self.script) > 1 else (self.script or [Answer()])[0]

    async def tgi(self, request: Request) -> Response:
        answer = await self._next(request)
        if answer.status != 200:
            return _error_response(answer)
        return StreamingResponse(_tgi_events(answer), media_type="text/event-stream")

    async def openai(self, request: Request) -> Response:
        answer = await self._next(request)
        if answer.status != 200:
            return _error_response(answer)
        body = self.received[-1].body
        usage = answer.usage and (body.get("stream_options") or {}).get("include_usage")
        return StreamingResponse(
            _openai_events(answer, str(body["model"]), bool(usage)),
            media_type="text/event-stream",
        )

    async def health(self, request: Request) -> Response:
        answer = self.script[0] if self.script else Answer()
        return JSONResponse({}, status_code=answer.status)


def _error_response(answer: Answer) -> Response:
    if isinstance(answer.body, dict):
        return JSONResponse(answer.body, status_code=answer.status)
    return PlainTextResponse(answer.body, status_code=answer.status)


async def _broken_off(answer: Answer, error: dict[str, Any]) -> AsyncIterator[str]:
    if answer.then == "error":
        yield f"data:{json.dumps(error)}\n\n"
    elif answer.then == "drop":
        # The connection closes without the end of the chunked body.
        raise ConnectionAbortedError("the fake drops the connection")
    else:
        await asyncio.sleep(30)  # cancelled when the client goes away


async def _tgi_events(answer: Answer) -> AsyncIterator[str]:
    """TGI's ``generate_stream``: one event per token, the last with the text and details."""
    tokens = [(text, False) for text in answer.tokens]
    if answer.finish == "eos_token":
        tokens.append(("</s>", True))  # TGI streams the end token too, marked special
    text = ""
    for index, (piece, special) in enumerate(tokens):
        if answer.cut_after is not None and index == answer.cut_after:
            error = {"error": TGI_ERRORS[answer.error_type], "error_type": answer.error_type}
            async for line in _broken_off(answer, error):
                yield line
            return
        text += "" if special else piece
        last = index == len(tokens) - 1
        event = {
            "index": index + 1,
            "token": {"id": 1000 + index, "text": piece, "logprob": -0.5, "special": special},
            "generated_text": text if last else None,
            "details": (
                {"finish_reason": answer.finish, "generated_tokens": len(tokens), "seed": None}
                if last
                else None
            ),
        }
        yield f"data:{json.dumps(event)}\n\n"


async def _openai_events(answer: Answer, model: str, usage: bool) -> AsyncIterator[str]:
    """``/v1/chat/completions`` with ``stream: true``: deltas, the reason, usage, [DONE]."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fake",
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    yield chunk(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    for index, piece in enumerate(answer.tokens):
        if answer.cut_after is not None and index == answer.cut_after:
            error = {"error": {"message": "generation crashed", "type": "server_error"}}
            async for line in _broken_off(answer, error):
                yield line
            return
        yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
    reason = "length" if answer.finish == "length" else "stop"
    yield chunk([{"index": 0, "delta": {}, "finish_reason": reason}])
    if usage:
        counts = {"prompt_tokens": 42, "completion_tokens": len(answer.tokens) + 1}
        yield chunk([], usage=counts | {"total_tokens": sum(counts.values())})
    yield "data: [DONE]\n\n"


@pytest.fixture(scope="module")
def serving() -> Iterator[FakeServer]:
    fake = FakeServer()
    app = Starlette(
        routes=[
            Route("/", fake.tgi, methods=["POST"]),
            Route("/generate_stream", fake.tgi, methods=["POST"]),
            Route("/v1/chat/completions", fake.openai, methods=["POST"]),
            Route("/health", fake.health, methods=["GET"]),
        ]
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="critical", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake server did not start"
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    yield fake
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()


@pytest.fixture
def fake(serving: FakeServer) -> FakeServer:
    serving.reset()
    return serving


def backend_for(protocol: Protocol, url: str, **options: Any) -> TgiBackend | OpenAIBackend:
    if protocol == "tgi":
        return TgiBackend(url, **options)
    return OpenAIBackend(url, model="twin-base", **options)


async def collect(
    backend: TgiBackend | OpenAIBackend,
    sampling: Sampling = GREEDY,
    *,
    adapter: str | None = None,
    into: list[Event] | None = None,
) -> list[Event]:
    events = [] if into is None else into
    async for event in backend.stream(MESSAGES, sampling, adapter=adapter):
        events.append(event)
    return events


def run(
    backend: TgiBackend | OpenAIBackend,
    sampling: Sampling = GREEDY,
    *,
    adapter: str | None = None,
    into: list[Event] | None = None,
) -> list[Event]:
    # A hang is a failure here, not a stuck test run.
    coroutine = collect(backend, sampling, adapter=adapter, into=into)
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def failure_of(
    backend: TgiBackend | OpenAIBackend, into: list[Event] | None = None
) -> BackendError:
    with pytest.raises(BackendError) as caught:
        run(backend, into=into)
    assert API_KEY not in str(caught.value)
    return caught.value


def pieces(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, Piece)]


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("length", "length"), ("eos_token", "stop"), ("stop_sequence", "stop")],
)
def test_tgi_tokens_arrive_in_order_then_the_servers_counts(
    fake: FakeServer, finish: Literal["length", "eos_token", "stop_sequence"], reason: str
) -> None:
    fake.reset(Answer(finish=finish))
    backend = TgiBackend(fake.url, count=words)
    events = run(backend)
    # The special end token TGI streams is not text for the user.
    assert events[:-1] == [Piece("Kafka"), Piece(" keeps"), Piece(" every"), Piece(" document")]
    generated = 5 if finish == "eos_token" else 4
    assert events[-1] == Finish(words(plain_prompt(MESSAGES)), generated, reason)

    [request] = fake.received
    assert request.path in {"/", "/generate_stream"}
    assert request.body["stream"] is True
    assert request.body["inputs"] == plain_prompt(MESSAGES)
    assert request.body["parameters"]["details"] is True
    assert request.body["parameters"]["max_new_tokens"] == GREEDY.max_new_tokens


def test_tgi_sends_the_adapter_and_the_prompt_of_its_format(fake: FakeServer) -> None:
    def fmt(messages: list[ChatMessage]) -> str:
        return "|".join(f"{m['role']}={m['content']}" for m in messages) + "|assistant="

    backend = TgiBackend(fake.url, prompt_format=fmt)
    run(backend, adapter="alice-lora")
    run(backend)
    with_adapter, without = (r.body for r in fake.received)
    assert with_adapter["inputs"] == fmt(MESSAGES)
    assert with_adapter["parameters"]["adapter_id"] == "alice-lora"
    # No adapter: the base model, not an adapter named "None".
    assert without["parameters"].get("adapter_id") is None


def test_tgi_gets_sampling_it_accepts(fake: FakeServer) -> None:
    backend = TgiBackend(fake.url)
    run(backend, Sampling(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=7))
    # TGI rejects temperature 0 and top_p 1.0: greedy is "no sampling", full top_p is none.
    run(backend, Sampling(max_new_tokens=8, temperature=0.0))
    run(backend, Sampling(max_new_tokens=8, temperature=0.7, top_p=1.0))
    sampled, greedy, full = (r.body["parameters"] for r in fake.received)
    assert sampled["do_sample"] is True
    assert sampled["temperature"] == 0.7
    assert sampled["top_p"] == 0.9
    assert sampled["seed"] == 7
    assert not greedy.get("do_sample")
    assert greedy.get("temperature") is None
    assert full.get("top_p") is None
    assert full["temperature"] == 0.7


def test_openai_deltas_arrive_in_order_then_the_servers_usage(fake: FakeServer) -> None:
    fake.reset(Answer(finish="eos_token"))
    events = run(OpenAIBackend(fake.url, model="twin-base"))
    assert events == [
        Piece("Kafka"),
        Piece(" keeps"),
        Piece(" every"),
        Piece(" document"),
        Finish(42, 5, "stop"),
    ]
    [request] = fake.received
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "twin-base"
    assert request.body["messages"] == MESSAGES
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["max_tokens"] == GREEDY.max_new_tokens
    assert request.body["temperature"] == 0.0


def test_openai_names_the_adapter_as_the_model(fake: FakeServer) -> None:
    fake.reset(Answer(finish="length"))
    events = run(OpenAIBackend(fake.url, model="twin-base"), adapter="alice-lora")
    assert events[-1] == Finish(42, 5, "length")
    assert fake.received[0].body["model"] == "alice-lora"


def test_openai_without_usage_still_finishes_with_counts(fake: FakeServer) -> None:
    fake.reset(Answer(usage=False, finish="length"))
    events = run(OpenAIBackend(fake.url, model="twin-base", count=words))
    prompt = sum(words(m["content"]) for m in MESSAGES)
    assert events[-1] == Finish(prompt, 4, "length")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_api_key_is_sent_as_a_bearer_token(fake: FakeServer, protocol: Protocol) -> None:
    run(backend_for(protocol, fake.url, api_key=API_KEY))
    assert fake.received[0].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_unavailable_before_the_first_token_is_retried(
    fake: FakeServer, protocol: Protocol
) -> None:
    busy = Answer(status=503, body="upstream connect error")
    fake.reset(busy, busy, Answer())
    events = run(backend_for(protocol, fake.url, retries=2, api_key=API_KEY))
    assert pieces(events) == ["Kafka", " keeps", " every", " document"]
    assert len(fake.received) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_always_unavailable_is_given_up_after_the_retries(
    fake: FakeServer, protocol: Protocol
) -> None:
    fake.reset(Answer(status=503, body="upstream connect error"))
    error = failure_of(backend_for(protocol, fake.url, retries=2, api_key=API_KEY))
    assert isinstance(error, BackendUnavailable)
    assert "503" in str(error)
    assert len(fake.received) == 3


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=400, body={"error": "Input validation error", "error_type": "validation"}),
        Answer(status=422, body={"error": "`inputs` must have less than 4096 tokens"}),
    ],
    ids=["400", "422"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_rejected_request_fails_without_retry(
    fake: FakeServer, protocol: Protocol, answer: Answer
) -> None:
    fake.reset(answer)
    error = failure_of(backend_for(protocol, fake.url, retries=2, api_key=API_KEY))
    assert isinstance(error, BackendFailed)
    assert len(fake.received) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_error_event_after_tokens_fails_without_retry(
    fake: FakeServer, protocol: Protocol
) -> None:
    fake.reset(Answer(cut_after=2, then="error"))
    received: list[Event] = []
    error = failure_of(backend_for(protocol, fake.url, retries=2, api_key=API_KEY), received)
    assert isinstance(error, BackendFailed)
    # The tokens before the error were the user's already; repeating them would duplicate.
    assert received == [Piece("Kafka"), Piece(" keeps")]
    assert len(fake.received) == 1


@pytest.mark.parametrize("then", ["drop", "stall"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stream_broken_off_after_tokens_is_a_failure_not_retried(
    fake: FakeServer, protocol: Protocol, then: Literal["drop", "stall"]
) -> None:
    # errors.py: BackendUnavailable means "nothing was generated"; here some text was.
    fake.reset(Answer(cut_after=2, then=then))
    received: list[Event] = []
    backend = backend_for(protocol, fake.url, retries=2, timeout_s=0.5, api_key=API_KEY)
    error = failure_of(backend, received)
    assert received == [Piece("Kafka"), Piece(" keeps")]
    assert len(fake.received) == 1
    assert isinstance(error, BackendFailed)


@pytest.mark.parametrize(
    "overloaded",
    [
        # TGI at max_concurrent_requests: HTTP 429 for a plain request...
        Answer(status=429, body={"error": "Model is overloaded", "error_type": "overloaded"}),
        # ...and, for a stream, HTTP 200 with one error event before any token.
        Answer(cut_after=0, then="error", error_type="overloaded"),
    ],
    ids=["http-429", "event"],
)
def test_an_overloaded_tgi_is_retried(fake: FakeServer, overloaded: Answer) -> None:
    fake.reset(overloaded, Answer())
    events = run(TgiBackend(fake.url, retries=2))
    assert pieces(events) == ["Kafka", " keeps", " every", " document"]
    assert len(fake.received) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unreachable_server_is_unavailable_at_once(protocol: Protocol) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    # Nothing listens there now: every attempt is refused.
    started = time.monotonic()
    error = failure_of(backend_for(protocol, url, retries=2, timeout_s=1.0, api_key=API_KEY))
    assert isinstance(error, BackendUnavailable)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_error_names_the_server_without_the_credentials_in_its_url(protocol: Protocol) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://twin:s3cret-pass@127.0.0.1:{probe.getsockname()[1]}"
    error = failure_of(backend_for(protocol, url, retries=0, timeout_s=1.0, api_key=API_KEY))
    assert isinstance(error, BackendUnavailable)
    assert "s3cret-pass" not in str(error) and "twin:" not in str(error)
    assert "***@127.0.0.1" in str(error)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_that_never_answers_is_unavailable_after_the_timeout(protocol: Protocol) -> None:
    # The kernel completes the handshake of a listening socket; nobody ever reads the request.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        error = failure_of(backend_for(protocol, url, retries=0, timeout_s=0.5, api_key=API_KEY))
        elapsed = time.monotonic() - started
    assert isinstance(error, BackendUnavailable)
    assert 0.4 <= elapsed < 3.0


@pytest.mark.parametrize(("status", "ready"), [(200, True), (503, False)])
def test_ready_follows_the_health_endpoint(fake: FakeServer, status: int, ready: bool) -> None:
    fake.reset(Answer(status=status))
    check = TgiBackend(fake.url).ready()
    if ready:
        asyncio.run(check)
    else:
        with pytest.raises(BackendUnavailable):
            asyncio.run(check)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-llama") / "model")


def test_the_chat_template_of_the_served_model_builds_the_prompt(
    fake: FakeServer, model_dir: Path
) -> None:
    render = chat_template_prompt(str(model_dir))
    expected = (
        "<|system|>You are the author's twin.<|end|>"
        "<|user|>Why did we move ingestion to Kafka?<|end|><|assistant|>"
    )
    assert render(MESSAGES) == expected
    run(TgiBackend(fake.url, prompt_format=render))
    assert fake.received[0].body["inputs"] == expected


def test_a_tokenizer_without_chat_template_gets_the_plain_prompt(
    model_dir: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    render = chat_template_prompt(str(tmp_path))
    assert render(MESSAGES) == (
        "System: You are the author's twin.\n\n"
        "User: Why did we move ingestion to Kafka?\n\n"
        "Assistant:"
    )


def test_a_requested_repetition_penalty_reaches_each_server_and_none_is_sent_unasked(
    fake: FakeServer,
) -> None:
    asked = Sampling(max_new_tokens=8, temperature=0.0, repetition_penalty=1.3)
    run(TgiBackend(fake.url), asked)
    run(TgiBackend(fake.url), Sampling(max_new_tokens=8, temperature=0.0))
    tgi_asked, tgi_default = (r.body["parameters"] for r in fake.received)
    assert tgi_asked["repetition_penalty"] == 1.3
    assert tgi_default.get("repetition_penalty") is None  # the server's own default
    fake.reset(Answer(finish="length"))
    run(OpenAIBackend(fake.url, model="twin-base"), asked)
    run(OpenAIBackend(fake.url, model="twin-base"), Sampling(max_new_tokens=8))
    openai_asked, openai_default = (r.body for r in fake.received)
    assert openai_asked["repetition_penalty"] == 1.3  # vLLM's extra sampling option
    assert "repetition_penalty" not in openai_default
