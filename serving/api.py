"""The HTTP API: every generation goes through Kafka and streams back as server-sent events.

- ``POST /v1/twins/{author}/generate``: SSE whose ``data:`` lines are the event
  objects of DESIGN.md "Generation on the wire" (``stream: false``: the ``done``
  object, or the ``error`` object with a 4xx/5xx status);
- ``POST /v1/chat/completions``: OpenAI-compatible, ``model`` = the author slug;
- ``GET /v1/twins/{author}/search``: ``search --json``'s shape;
- ``GET /v1/models``: the twins the key may use, as OpenAI lists models;
- ``GET /healthz`` (200 once the model is loaded and the consumer has joined),
  ``GET /metrics`` (Prometheus).

Every route but the health check and metrics needs a bearer key that may use
the author: missing or unknown 401, another author's twin 403.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and the key check they name (``caller``) is local to create_app.
import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from schemas.common import AUTHOR_SLUG_PATTERN
from schemas.generation import DoneEvent, ErrorCode, ErrorEvent, ReplyEvent, TokenEvent
from serving.keys import ApiKeys, Caller
from serving.replies import ReplyChannel

_STATUS = {
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.BACKEND_UNAVAILABLE: 503,
    ErrorCode.BACKEND_ERROR: 502,
    ErrorCode.WORKER_LOST: 503,
    ErrorCode.INTERNAL: 500,
}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Searcher(Protocol):
    def __call__(self, author: str, query: str, k: int) -> list[dict[str, Any]]: ...


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=32_000)]
    max_new_tokens: Annotated[int, Field(ge=1, le=2048)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    stream: bool = True


class ChatMessageBody(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send more than we use

    model: str
    messages: Annotated[list[ChatMessageBody], Field(min_length=1)]
    stream: bool = False
    max_tokens: Annotated[int, Field(ge=1, le=2048)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=2048)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llm_twin_api_requests", "API requests", ["route", "status"], registry=self.registry
        )
        self.tokens = Counter(
            "llm_twin_api_tokens", "Token events streamed to clients", registry=self.registry
        )
        self.in_flight = Gauge(
            "llm_twin_api_generations_in_flight", "Generations streaming", registry=self.registry
        )
        self.first_token = Histogram(
            "llm_twin_api_first_token_seconds",
            "From request to first token, through Kafka",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )


def create_app(
    channel: ReplyChannel,
    keys: ApiKeys,
    search: Searcher,
    *,
    authors: Callable[[], list[str]],
    ready: Callable[[], bool],
    timeout_s: float,
) -> FastAPI:
    app = FastAPI(title="LLM Twin", docs_url="/docs", redoc_url=None)
    metrics = Metrics()
    bearer = HTTPBearer(auto_error=False)

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        found = keys.caller(credentials.credentials if credentials else None)
        if found is None:
            raise HTTPException(
                401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return found

    def authorised(author: str, who: Caller) -> None:
        if not who.may_use(author):
            raise HTTPException(403, f"this key may not use the twin {author!r}")

    @app.exception_handler(HTTPException)
    async def _error(request: Request, error: HTTPException) -> JSONResponse:
        metrics.requests.labels(request.url.path.split("/")[-1], str(error.status_code)).inc()
        body: dict[str, Any] = {"detail": error.detail}
        if request.url.path == "/v1/chat/completions":  # the shape OpenAI clients parse
            body = {"error": {"message": error.detail, "type": "invalid_request_error"}}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        """The twins this key may use, as OpenAI lists models (``model`` = author slug)."""
        slugs = await asyncio.to_thread(authors)
        return {
            "object": "list",
            "data": [
                {"id": slug, "object": "model", "created": 0, "owned_by": "llm-twin"}
                for slug in sorted(slugs)
                if who.may_use(slug)
            ],
        }

    @app.get("/v1/twins/{author}/search")
    async def search_route(
        author: Annotated[str, Path(pattern=AUTHOR_SLUG_PATTERN)],
        who: Annotated[Caller, Depends(caller)],
        q: Annotated[str, Query(min_length=1, max_length=2000)],
        k: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> dict[str, Any]:
        authorised(author, who)
        results = await asyncio.to_thread(search, author, q, k)
        metrics.requests.labels("search", "200").inc()
        return {"results": results}

    @app.post("/v1/twins/{author}/generate", response_model=None)
    async def generate(
        author: Annotated[str, Path(pattern=AUTHOR_SLUG_PATTERN)],
        body: GenerateBody,
        who: Annotated[Caller, Depends(caller)],
    ) -> Response:
        authorised(author, who)
        request = _new_request(channel, author, body.prompt, body, timeout_s)
        events = _measured(channel.stream(request), metrics)
        if body.stream:
            metrics.requests.labels("generate", "200").inc()
            return StreamingResponse(
                (f"data: {event.model_dump_json()}\n\n" async for event in events),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        final = await _final(events)
        status = 200 if isinstance(final, DoneEvent) else _STATUS[final.code]
        metrics.requests.labels("generate", str(status)).inc()
        return JSONResponse(json.loads(final.model_dump_json()), status_code=status)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatBody, who: Annotated[Caller, Depends(caller)]) -> Response:
        author = body.model
        authorised(author, who)
        prompt = _idea(body.messages)
        if not prompt:
            raise HTTPException(400, "the messages hold no user text")
        limits = GenerateBody(
            prompt=prompt,
            max_new_tokens=body.max_completion_tokens or body.max_tokens or 512,
            temperature=body.temperature,
            top_p=body.top_p,
        )
        request = _new_request(channel, author, prompt, limits, timeout_s)
        events = _measured(channel.stream(request), metrics)
        completion_id = f"chatcmpl-{request.request_id.hex}"
        created = int(time.time())
        if body.stream:
            metrics.requests.labels("chat", "200").inc()
            return StreamingResponse(
                _chat_chunks(events, completion_id, created, author, limits.max_new_tokens),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        final = await _final(events)
        if isinstance(final, ErrorEvent):
            status = _STATUS[final.code]
            metrics.requests.labels("chat", str(status)).inc()
            return JSONResponse(
                {"error": {"message": final.message, "type": "server_error", "code": final.code}},
                status_code=status,
            )
        metrics.requests.labels("chat", "200").inc()
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": author,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": final.text},
                        "finish_reason": _finish_reason(final, limits.max_new_tokens),
                    }
                ],
                "usage": final.usage.model_dump(),
            }
        )

    return app


def _new_request(
    channel: ReplyChannel, author: str, prompt: str, body: GenerateBody, timeout_s: float
) -> Any:
    try:
        return channel.new_request(
            author,
            prompt,
            max_new_tokens=body.max_new_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            timeout_s=timeout_s,
        )
    except ValueError as error:  # pydantic: an author that is not a slug
        raise HTTPException(422, f"invalid request: {error}") from None


async def _measured(
    events: AsyncIterator[ReplyEvent], metrics: Metrics
) -> AsyncIterator[ReplyEvent]:
    started = time.perf_counter()
    first = True
    metrics.in_flight.inc()
    try:
        async for event in events:
            if isinstance(event, TokenEvent):
                metrics.tokens.inc()
                if first:
                    metrics.first_token.observe(time.perf_counter() - started)
                    first = False
            yield event
    finally:
        metrics.in_flight.dec()
        await events.aclose()  # type: ignore[attr-defined]


async def _final(events: AsyncIterator[ReplyEvent]) -> DoneEvent | ErrorEvent:
    async for event in events:
        if isinstance(event, DoneEvent | ErrorEvent):
            return event
    raise RuntimeError("the reply stream ended without a final event")  # ReplyChannel forbids it


def _idea(messages: list[ChatMessageBody]) -> str:
    """The user's text: every user turn, in order (the twin drafts from the whole ask)."""
    parts = []
    for message in messages:
        if message.role != "user" or message.content is None:
            continue
        if isinstance(message.content, str):
            parts.append(message.content)
        else:
            parts += [str(p.get("text", "")) for p in message.content if p.get("type") == "text"]
    return "\n\n".join(p for p in parts if p.strip())


def _finish_reason(done: DoneEvent, max_new_tokens: int) -> str:
    return "length" if done.usage.completion_tokens >= max_new_tokens else "stop"


async def _chat_chunks(
    events: AsyncIterator[ReplyEvent],
    completion_id: str,
    created: int,
    author: str,
    max_new_tokens: int,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": author,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        } | extra
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    sent = False
    attempt = 1
    async for event in events:
        if event.attempt != attempt:
            attempt = event.attempt
            if sent:  # text already on the client's screen cannot be taken back
                yield _chat_error("the worker was lost mid-answer; ask again", "worker_lost")
                return
        if isinstance(event, TokenEvent):
            sent = True
            yield chunk({"content": event.text})
        elif isinstance(event, DoneEvent):
            finish = _finish_reason(event, max_new_tokens)
            yield chunk({}, finish, usage=event.usage.model_dump())
            yield "data: [DONE]\n\n"
        else:
            yield _chat_error(event.message, event.code.value)


def _chat_error(message: str, code: str) -> str:
    body = {"error": {"message": message, "type": "server_error", "code": code}}
    return f"data: {json.dumps(body)}\n\n"
