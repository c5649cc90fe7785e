"""One generation request, answered: retrieve -> prompt -> stream tokens -> done or error.

Independent of Kafka and Faust: the consumer hands in the request and an
``emit`` coroutine that publishes one reply event. Whatever happens inside,
the request ends with exactly one ``done`` or ``error`` event, unless the task
is cancelled (a ``Cancel`` message, or the worker shutting down): the caller
decides what a cancellation means.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from llm.backend import Backend, Finish, Piece, Sampling
from llm.errors import BackendFailed, BackendUnavailable
from llm.prompt import Passage, build_messages
from schemas.generation import (
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    ReplyEvent,
    Source,
    Timings,
    TokenEvent,
    Usage,
)
from schemas.redact import without_credentials
from serving.retrieval import Retriever

log = logging.getLogger(__name__)

Emit = Callable[[ReplyEvent], Awaitable[None]]
# What a client reads for each failure: ours, never the exception's text, which names
# backend URLs (credentials included) and internals. The details go to the log.
SAFE_MESSAGES = {
    ErrorCode.DEADLINE_EXCEEDED: "the deadline passed before the answer was complete",
    ErrorCode.BACKEND_UNAVAILABLE: "the model is unreachable or busy; try again shortly",
    ErrorCode.BACKEND_ERROR: "the model failed while answering",
    ErrorCode.INTERNAL: "internal error while answering",
}
# A list marker at the start of a line the backend wrote: "-", "*", "1.", "2)".
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)])\s*")


@dataclass(frozen=True)
class AnswerSettings:
    # Tokens of retrieved text in the prompt: SmolLM2 reads 8k tokens; 1,500 of
    # the author's own words is plenty of style and facts, and keeps the first
    # token quick on a CPU (prompt processing is most of time to first token).
    context_tokens: int = 1500
    # Alternative phrasings of the idea, asked of the backend, searched alongside it.
    expand_queries: int = 0


class Answerer:
    def __init__(
        self,
        retriever: Retriever,
        backend: Backend,
        settings: AnswerSettings,
        *,
        author_name: Callable[[str], str] = lambda slug: slug,
        adapter_for: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self._retriever = retriever
        self._backend = backend
        self._settings = settings
        self._author_name = author_name
        self._adapter_for = adapter_for

    async def answer(self, request: GenerationRequest, attempt: int, emit: Emit) -> None:
        started = time.perf_counter()
        remaining = (request.deadline - datetime.now(UTC)).total_seconds()

        def error(code: ErrorCode) -> ErrorEvent:
            return ErrorEvent(
                request_id=request.request_id,
                attempt=attempt,
                code=code,
                message=SAFE_MESSAGES[code],
            )

        if remaining <= 0:
            await emit(error(ErrorCode.DEADLINE_EXCEEDED))
            return
        try:
            async with asyncio.timeout(remaining):
                done = await self._generate(request, attempt, emit, started)
        except TimeoutError:
            await emit(error(ErrorCode.DEADLINE_EXCEEDED))
            return
        except BackendUnavailable as failure:
            log.warning("request %s: %s", request.request_id, _loggable(failure))
            await emit(error(ErrorCode.BACKEND_UNAVAILABLE))
            return
        except BackendFailed as failure:
            log.warning("request %s: %s", request.request_id, _loggable(failure))
            await emit(error(ErrorCode.BACKEND_ERROR))
            return
        except Exception:  # noqa: BLE001 - the boundary: a request always ends, whatever broke
            # The traceback, for whoever debugs it, with any URL's credentials masked.
            trace = without_credentials(traceback.format_exc())
            log.error("request %s failed:\n%s", request.request_id, trace)
            await emit(error(ErrorCode.INTERNAL))
            return
        await emit(done)

    async def _generate(
        self, request: GenerationRequest, attempt: int, emit: Emit, started: float
    ) -> DoneEvent:
        queue_ms = max(0.0, (datetime.now(UTC) - request.created_at).total_seconds() * 1000)
        queries = [request.prompt, *await self._expansions(request)]
        passages = await self._retriever.retrieve(
            request.author,
            queries,
            budget_tokens=self._settings.context_tokens,
            count_tokens=self._backend.count_tokens,
        )
        retrieved = time.perf_counter()
        messages = build_messages(self._author_name(request.author), request.prompt, passages)
        sampling = Sampling(
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            repetition_penalty=request.repetition_penalty,
            no_repeat_ngram_size=request.no_repeat_ngram_size,
        )
        pieces: list[str] = []
        first_token: float | None = None
        finish = Finish(0, 0, "stop")
        adapter = await self._adapter_for(request.author) if self._adapter_for else None
        async for event in self._backend.stream(messages, sampling, adapter=adapter):
            if isinstance(event, Piece):
                first_token = first_token or time.perf_counter()
                await emit(
                    TokenEvent(
                        request_id=request.request_id,
                        attempt=attempt,
                        seq=len(pieces),
                        text=event.text,
                    )
                )
                pieces.append(event.text)
            else:
                finish = event
        ended = time.perf_counter()
        return DoneEvent(
            request_id=request.request_id,
            attempt=attempt,
            text="".join(pieces),
            sources=_sources(passages),
            usage=Usage(
                prompt_tokens=finish.prompt_tokens,
                completion_tokens=finish.completion_tokens,
                total_tokens=finish.prompt_tokens + finish.completion_tokens,
            ),
            timings=Timings(
                queue_ms=round(queue_ms, 3),
                retrieval_ms=round((retrieved - started) * 1000, 3),
                first_token_ms=round((first_token - started) * 1000, 3) if first_token else None,
                total_ms=round((ended - started) * 1000, 3),
            ),
        )

    async def _expansions(self, request: GenerationRequest) -> list[str]:
        """Other phrasings of the idea, for retrieval only; none when not configured."""
        wanted = self._settings.expand_queries
        if wanted < 1:
            return []
        instruction = (
            f"Write {wanted} different short search queries, one per line and nothing else, "
            f"that would find passages relevant to this request:\n{request.prompt}"
        )
        text = ""
        async for event in self._backend.stream(
            [{"role": "user", "content": instruction}],
            Sampling(max_new_tokens=24 * wanted, temperature=0.0),
        ):
            if isinstance(event, Piece):
                text += event.text
        lines = [_LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
        return [line for line in lines if line][:wanted]


def _loggable(failure: BaseException) -> str:
    return without_credentials(f"{type(failure).__name__}: {failure}")


def _sources(passages: list[Passage]) -> list[Source]:
    """The documents drawn on, once each, in the order they were ranked."""
    seen: dict[str, Source] = {}
    for passage in passages:
        key = str(passage.document_id)
        if key not in seen:
            seen[key] = Source(
                document_id=passage.document_id,
                title=passage.title,
                source_url=passage.source_url,
            )
    return list(seen.values())
