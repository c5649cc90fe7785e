"""The HTTP API: every generation goes through Kafka and streams back as server-sent events.

- ``POST /v1/twins/{author}/generate``: SSE whose ``data:`` lines are the event
  objects of docs/wire-contracts.md (``stream: false``: the ``done``
  object, or the ``error`` object with a 4xx/5xx status);
- ``POST /v1/chat/completions``: OpenAI-compatible, ``model`` = the author slug;
- ``GET /v1/twins/{author}/search``: ``search --json``'s shape;
- ``GET /v1/models``: the twins the key may use, as OpenAI lists models;
- ``GET /healthz`` (200 while this process can answer: ``ready()``),
  ``GET /livez`` (200 while the process runs), ``GET /readyz`` (every part's
  state; 200 only when all are ready, else 503; why a part failed is shown to
  loopback clients only), ``GET /metrics`` (Prometheus; loopback clients only).

Every route but the health checks and metrics needs a bearer key that may use
the author: missing or unknown 401, another author's twin 403. The key is
checked, and a body over :attr:`Limits.max_request_bytes` refused with 413,
before a byte of the body is read; generations in flight are bounded per key
and in all (429 with ``Retry-After``). ``/docs`` and ``/openapi.json`` are off
unless :attr:`Limits.docs`.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and the key check they name (``caller``) is local to create_app.
import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.ports import is_loopback
from schemas.common import AUTHOR_SLUG_PATTERN
from schemas.generation import DoneEvent, ErrorCode, ErrorEvent, ReplyEvent, TokenEvent
from serving.keys import ApiKeys, Caller
from serving.replies import ReplyChannel
from serving.settings import ServingSettings

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
# The wire contract's bound on a prompt (GenerationRequest.prompt).
MAX_PROMPT_CHARS = 32_000
# More turns than any conversation a draft is asked from; the body limit bounds their text.
MAX_CHAT_MESSAGES = 256
# Generations last seconds; a slot is likely free again by then.
RETRY_AFTER_S = 1
# A 1 MiB body arrives in well under a second on any link a client drafts from; a body
# still incomplete after this long is a client holding the connection open (408).
BODY_TIMEOUT_S = 30.0
_CHAT = "/v1/chat/completions"
# What an OpenAI client reads in ``error.type`` and ``error.code`` for each refusal.
_REFUSALS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_request"),
    429: ("rate_limit_error", "rate_limited"),
}


@dataclass(frozen=True)
class Limits:
    """What the API accepts; the defaults are ServingSettings'."""

    max_request_bytes: int = 1 << 20
    max_generations: int = 16
    max_generations_per_key: int = 4
    max_prompt_tokens: int = 4096
    docs: bool = False
    body_timeout_s: float = BODY_TIMEOUT_S

    @classmethod
    def of(cls, settings: ServingSettings) -> "Limits":
        return cls(
            max_request_bytes=settings.max_request_bytes,
            max_generations=settings.max_generations,
            max_generations_per_key=settings.max_generations_per_key,
            max_prompt_tokens=settings.max_prompt_tokens,
            docs=settings.api_docs,
        )


class Searcher(Protocol):
    def __call__(self, author: str, query: str, k: int) -> list[dict[str, Any]]: ...


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    max_new_tokens: Annotated[int, Field(ge=1, le=2048)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    # Against loops; unset: the backend's default (docs/drafting-with-your-twin.md).
    repetition_penalty: Annotated[float, Field(ge=1.0, le=2.0)] | None = None
    no_repeat_ngram_size: Annotated[int, Field(ge=0, le=16)] | None = None
    stream: bool = True


class ChatMessageBody(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send more than we use

    model: str
    messages: Annotated[list[ChatMessageBody], Field(min_length=1, max_length=MAX_CHAT_MESSAGES)]
    stream: bool = False
    max_tokens: Annotated[int, Field(ge=1, le=2048)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=2048)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    # vLLM's and TGI's names, as OpenAI clients send them in their extra body.
    repetition_penalty: Annotated[float, Field(ge=1.0, le=2.0)] | None = None
    no_repeat_ngram_size: Annotated[int, Field(ge=0, le=16)] | None = None


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


class InFlight:
    """Generations being answered now, per key and in all; over either bound, refused."""

    def __init__(self, total: int, per_key: int) -> None:
        self._total = total
        self._per_key = per_key
        self._counts: collections.Counter[str] = collections.Counter()

    def take(self, key: str) -> bool:
        # One event loop runs every route: take and give_back need no lock.
        if self._counts.total() >= self._total or self._counts[key] >= self._per_key:
            return False
        self._counts[key] += 1
        return True

    def give_back(self, key: str) -> None:
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]


class Gate:
    """ASGI middleware: the key, then the body's size, before any route reads the body.

    A request without a valid key, or with a body over ``max_body_bytes`` (by its
    Content-Length, or counted as a chunked body arrives), is answered at once and
    its connection closed, the rest of the body unread. An accepted body is read
    here, at most ``max_body_bytes`` of it within ``body_timeout_s`` (else 408),
    and handed on whole.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys,
        max_body_bytes: int,
        public: frozenset[str],
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self._app = app
        self._keys = keys
        self._max = max_body_bytes
        self._public = public
        self._body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._public:
            await self._app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        length = headers.get("content-length", "")
        has_body = (length not in ("", "0")) or "transfer-encoding" in headers
        close = {"Connection": "close"} if has_body else {}
        path = scope["path"]
        found = self._keys.caller(_bearer(headers.get("authorization", "")))
        if found is None:
            unknown = refusal(
                path, 401, "a valid API key is required", {"WWW-Authenticate": "Bearer"} | close
            )
            await unknown(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = found
        too_large = refusal(
            path, 413, f"the request body is over {self._max} bytes", {"Connection": "close"}
        )
        if length.isdigit() and int(length) > self._max:
            await too_large(scope, receive, send)
            return
        if not has_body:
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client left: nobody to answer
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self._max:
                        await too_large(scope, receive, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            slow = refusal(
                path,
                408,
                f"the request body did not arrive within {self._body_timeout_s:g} s",
                {"Connection": "close"},
            )
            await slow(scope, receive, send)
            return
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is None:  # after the body: disconnects, as the server reports them
                return await receive()
            whole, body = body, None
            return {"type": "http.request", "body": whole, "more_body": False}

        await self._app(scope, replay, send)


class _Stream(StreamingResponse):
    """Server-sent events whose generation slot is given back however the stream ends."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=_SSE_HEADERS)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def refusal(
    path: str, status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A refused request's body: OpenAI's shape on its route, else ``detail`` and ``code``."""
    kind, code = _REFUSALS.get(status, ("invalid_request_error", "invalid_request"))
    body: dict[str, Any] = {"detail": message, "code": code}
    if path == _CHAT:  # the shape OpenAI clients parse
        body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _bearer(authorization: str) -> str | None:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def create_app(
    channel: ReplyChannel,
    keys: ApiKeys,
    search: Searcher,
    *,
    authors: Callable[[], list[str]],
    ready: Callable[[], bool],
    parts: Callable[..., Mapping[str, Any]] = lambda reasons=True: {},
    timeout_s: float,
    limits: Limits = Limits(),
    count_tokens: Callable[[str], int] = lambda text: max(1, len(text) // 4),
) -> FastAPI:
    docs = limits.docs
    app = FastAPI(
        title="LLM Twin",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    metrics = Metrics()
    in_flight = InFlight(limits.max_generations, limits.max_generations_per_key)
    public = {"/healthz", "/livez", "/readyz", "/metrics"} | (
        {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"} if docs else set()
    )
    app.add_middleware(
        Gate,
        keys=keys,
        max_body_bytes=limits.max_request_bytes,
        public=frozenset(public),
        body_timeout_s=limits.body_timeout_s,
    )

    def caller(request: Request) -> Caller:
        found: Caller | None = getattr(request.state, "caller", None)  # set by the Gate
        if found is None:
            raise HTTPException(
                401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return found

    def authorised(author: str, who: Caller) -> None:
        if not who.may_use(author):
            raise HTTPException(403, f"this key may not use the twin {author!r}")

    def admit(who: Caller) -> Callable[[], None]:
        """A generation slot for ``who``, or 429 at once; the callable gives it back."""
        if not in_flight.take(who.fingerprint):
            raise HTTPException(
                429,
                "too many generations in flight for this key or this server; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                in_flight.give_back(who.fingerprint)

        return release

    def fits(prompt: str) -> None:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise HTTPException(
                413, f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} fit"
            )
        tokens = count_tokens(prompt)
        if tokens > limits.max_prompt_tokens:
            raise HTTPException(
                413, f"the prompt is {tokens} tokens; at most {limits.max_prompt_tokens} fit"
            )

    @app.exception_handler(HTTPException)
    async def _error(request: Request, error: HTTPException) -> JSONResponse:
        metrics.requests.labels(request.url.path.split("/")[-1], str(error.status_code)).inc()
        return refusal(request.url.path, error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if request.url.path != _CHAT:
            return JSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)
        # OpenAI answers a malformed request with 400 and names the field.
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return refusal(_CHAT, 400, f"{where}: {first['msg']}")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/livez")
    async def livez() -> dict[str, bool]:
        return {"live": True}  # this answer is the proof: the process and its loop run

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        # Why a part failed (a path, a host) is for the operator on this machine; anyone
        # else (a load balancer's probe) sees the states alone.
        local = request.client is not None and is_loopback(request.client.host)
        report = parts(reasons=local)
        ok = all(p["state"] == "ready" for p in report.values()) if report else ready()
        return JSONResponse({"ready": ok, "parts": report}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        # Counts per route and status are for the operator, not for whoever holds a key.
        if request.client is None or not is_loopback(request.client.host):
            raise HTTPException(404, "Not Found")
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
        release = admit(who)
        streaming = False
        try:
            fits(body.prompt)
            request = _new_request(channel, author, body.prompt, body, timeout_s)
            events = _measured(channel.stream(request), metrics)
            if body.stream:
                metrics.requests.labels("generate", "200").inc()
                streaming = True
                return _Stream(
                    (f"data: {event.model_dump_json()}\n\n" async for event in events), release
                )
            final = await _final(events)
        finally:
            if not streaming:
                release()
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
        release = admit(who)
        streaming = False
        try:
            fits(prompt)
            asked = GenerateBody(
                prompt=prompt,
                max_new_tokens=body.max_completion_tokens or body.max_tokens or 512,
                temperature=body.temperature,
                top_p=body.top_p,
                repetition_penalty=body.repetition_penalty,
                no_repeat_ngram_size=body.no_repeat_ngram_size,
            )
            request = _new_request(channel, author, prompt, asked, timeout_s)
            events = _measured(channel.stream(request), metrics)
            completion_id = f"chatcmpl-{request.request_id.hex}"
            created = int(time.time())
            if body.stream:
                metrics.requests.labels("chat", "200").inc()
                streaming = True
                return _Stream(
                    _chat_chunks(events, completion_id, created, author, asked.max_new_tokens),
                    release,
                )
            final = await _final(events)
        finally:
            if not streaming:
                release()
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
                        "finish_reason": _finish_reason(final, asked.max_new_tokens),
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
            repetition_penalty=body.repetition_penalty,
            no_repeat_ngram_size=body.no_repeat_ngram_size,
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
