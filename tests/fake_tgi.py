"""A stand-in for a GPU-only TGI server that speaks TGI's real streaming protocol.

``POST /`` or ``/generate_stream`` with ``{"inputs", "parameters", "stream": true}``
answers with server-sent events, one per token, the last one carrying
``generated_text`` and ``details`` (as text-generation-inference does). The
tokens are ``w0 w1 w2 ...``, one every ``token_delay_s``; every request's body is
recorded, so tests can see the prompt the twin built (its retrieved passages).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from infra.ports import free_port


@dataclass
class FakeTgi:
    token_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def prompts(self) -> list[str]:
        return [str(body["inputs"]) for body in self.requests]

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        parameters = body.get("parameters") or {}
        count = int(parameters.get("max_new_tokens") or 20)
        if not body.get("stream"):
            text = "".join(f"w{n} " for n in range(count))
            return JSONResponse([{"generated_text": text}])
        return StreamingResponse(self._tokens(count), media_type="text/event-stream")

    async def _tokens(self, count: int) -> AsyncIterator[str]:
        text = ""
        for index in range(count):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            piece = f"w{index} "
            text += piece
            last = index == count - 1
            event = {
                "index": index,
                "token": {"id": 100 + index, "text": piece, "logprob": -0.1, "special": False},
                "generated_text": text if last else None,
                "details": (
                    {"finish_reason": "length", "generated_tokens": count, "seed": None}
                    if last
                    else None
                ),
            }
            yield f"data: {json.dumps(event)}\n\n"

    async def _health(self, request: Request) -> Response:
        return JSONResponse({})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._generate, methods=["POST"]),
                Route("/generate_stream", self._generate, methods=["POST"]),
                Route("/generate", self._generate, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )


@contextmanager
def running(fake: FakeTgi) -> Iterator[FakeTgi]:
    """Serve ``fake`` on a free loopback port in a background thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake TGI server did not start")
        time.sleep(0.02)
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
