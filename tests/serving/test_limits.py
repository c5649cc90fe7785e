"""The API cannot be flooded, and tells a client only what is safe to tell.

A real ``llm-twin serve`` process on a private embedded stack (no documents:
these are the API's own limits), its model a stand-in TGI server in this
process (tests/fake_tgi.py) reached through the real ``tgi`` backend at a URL
that carries a password. Raw sockets send what an HTTP client would not: a
body's headers without the body, a chunked body without an end. What needs
another address than loopback, or another setting, runs the same ``create_app``
in process on the same stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from infra import credentials, localstack
from infra.ports import free_port
from infra.settings import PlatformSettings
from serving.api import Limits, create_app
from serving.keys import ApiKeys
from serving.replies import open_channel
from tests.fake_tgi import FakeTgi, running
from tests.serving.test_api import ADMIN_KEY, ALICE_KEY, KEYS, auth, start_serve, wait_healthy
from tests.support import run_cli

PASSWORD = "hunter2-backend-secret"
GENERATE = "/v1/twins/alice/generate"
CHAT = "/v1/chat/completions"
MIB = 1 << 20
# Long enough that every request of a flood arrives while the first ones still generate.
SLOW_TOKENS, TOKEN_DELAY_S = 30, 0.1


@dataclass
class FailingTgi(FakeTgi):
    """The stand-in TGI server, answering TGI's own error body while ``failure`` is set."""

    failure: str | None = None

    async def _generate(self, request: Request) -> Response:
        if self.failure is None:
            return await super()._generate(request)
        return JSONResponse({"error": self.failure, "error_type": "validation"}, status_code=422)


@dataclass
class Server:
    url: str
    port: int
    home: Path
    process: Any
    fake: FailingTgi


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("limits-home")
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    try:
        fake = FailingTgi()
        with running(fake):
            port = free_port()
            backend = fake.url.replace("http://", f"http://twin:{PASSWORD}@")
            process = start_serve(
                home, fake, port, LLM_TWIN_TGI_URL=backend, LLM_TWIN_REQUEST_TIMEOUT_S="20"
            )
            url = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(url, process)
                yield Server(url, port, home, process, fake)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
    finally:
        localstack.down(settings)


@pytest.fixture
def in_process(server: Server) -> Iterator[Any]:
    """``create_app`` as ``serve`` builds it, on the same stack, for a given :class:`Limits`."""
    bootstrap = localstack.endpoints(PlatformSettings(home=server.home)).kafka_bootstrap_servers
    assert bootstrap is not None
    settings = PlatformSettings(home=server.home)
    channel, claim = open_channel(
        bootstrap, server.home, one_record_per_batch=True, signer=credentials.signer(settings)
    )

    def build(limits: Limits | None = None) -> FastAPI:
        return create_app(
            channel,
            ApiKeys.parse(KEYS),
            lambda author, query, k: [],
            authors=lambda: ["alice"],
            ready=lambda: True,
            timeout_s=10,
            limits=limits or Limits(),
        )

    try:
        yield build
    finally:
        channel.close()
        if claim is not None:
            claim.release()


# -- raw HTTP ----------------------------------------------------------------------------------


def request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, the headers and the body (what of it came before the server closed)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed without an answer: {received!r}")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def body_sent_headers(kind: str, key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if kind == "length":
        headers["Content-Length"] = str(20 * MIB)
    else:
        headers["Transfer-Encoding"] = "chunked"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


@pytest.mark.parametrize("kind", ["length", "chunked"])
def test_a_20_mb_post_without_a_key_gets_401_before_a_byte_of_its_body_is_sent(
    server: Server, kind: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(GENERATE, body_sent_headers(kind, None)))
        # Nothing of the body is sent: an answer at all means it was not waited for.
        status, headers, _ = read_response(sock)
        assert status == 401
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_20_mb_post_with_a_key_gets_413_naming_the_limit_before_its_body_is_sent(
    server: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(GENERATE, body_sent_headers("length", ALICE_KEY)))
        status, headers, body = read_response(sock)
        assert status == 413
        assert str(MIB) in body.decode()
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_chunked_body_is_cut_off_with_413_once_it_passes_the_limit(server: Server) -> None:
    # A JSON body the old code parses whole: a prompt of 4 MiB, sent 64 KiB at a time.
    piece = b"x" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(GENERATE, body_sent_headers("chunked", ALICE_KEY)))
        sock.sendall(b'b\r\n{"prompt":"\r\n')
        try:
            while sent < 4 * MIB:
                sock.sendall(chunk)
                sent += len(piece)
                if sent > MIB:  # give the server the chance to answer between chunks
                    sock.settimeout(0.05)
                    try:
                        if sock.recv(1, socket.MSG_PEEK):
                            break
                    except TimeoutError:
                        pass
                    finally:
                        sock.settimeout(10)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us: the answer is already waiting
        status, _, body = read_response(sock)
    assert status == 413
    assert "bytes" in body.decode()
    assert sent < 3 * MIB  # refused as it passed 1 MiB, not after the whole body


def test_a_body_that_never_finishes_arriving_gets_408_and_frees_the_connection(
    in_process: Any,
) -> None:
    app = in_process(Limits(body_timeout_s=0.3))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": GENERATE,
        "raw_path": GENERATE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-length", b"1000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {ALICE_KEY}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    first = True
    sent: list[Message] = []

    async def receive() -> Message:  # ten bytes, then a client that sends nothing more
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"prompt":', "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))

    assert time.monotonic() - started < 5
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 408


# -- generations in flight ---------------------------------------------------------------------


def test_one_key_flooding_50_generations_gets_429s_at_once_and_another_key_still_answers(
    server: Server,
) -> None:
    body = {"prompt": "A post about my starter", "max_new_tokens": SLOW_TOKENS, "stream": False}

    async def ask(client: httpx.AsyncClient, key: str) -> tuple[int, str | None, float]:
        response = await client.post(GENERATE, json=body, headers=auth(key))
        return response.status_code, response.headers.get("retry-after"), time.monotonic()

    async def flood() -> tuple[list[tuple[int, str | None, float]], tuple[int, Any, float]]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            alice = [asyncio.create_task(ask(client, ALICE_KEY)) for _ in range(50)]
            await asyncio.sleep(0.3)  # the flood is in before the other key asks
            other = await ask(client, ADMIN_KEY)
            return await asyncio.gather(*alice), other

    async def drop_streams() -> int:
        """Four streams hung up on after their first token; then one more ask."""
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for _ in range(4):
                streamed = body | {"stream": True}
                async with client.stream(
                    "POST", GENERATE, json=streamed, headers=auth(ALICE_KEY)
                ) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            break
            server.fake.token_delay_s = 0.0
            for _ in range(50):  # the server notices each hang-up within moments
                again = await client.post(GENERATE, json=body, headers=auth(ALICE_KEY))
                if again.status_code != 429:
                    return again.status_code
                await asyncio.sleep(0.1)
            return 429

    server.fake.token_delay_s = TOKEN_DELAY_S
    try:
        started = time.monotonic()
        floods, (other_status, _, other_done) = asyncio.run(flood())
        server.fake.token_delay_s = TOKEN_DELAY_S
        after_hang_ups = asyncio.run(drop_streams())
    finally:
        server.fake.token_delay_s = 0.0

    statuses = [status for status, _, _ in floods]
    assert statuses.count(200) == 4 and statuses.count(429) == 46, statuses
    refused = [(retry, done) for status, retry, done in floods if status == 429]
    assert {retry for retry, _ in refused} == {"1"}
    # At once: every refusal came before the first admitted generation could finish.
    first_answer = min(done for status, _, done in floods if status == 200)
    assert max(done for _, done in refused) < first_answer
    # The other key's generation ran beside the flood, not behind it, well within its 20 s.
    assert other_status == 200
    assert other_done - started < 3 * SLOW_TOKENS * TOKEN_DELAY_S
    # Each slot comes back when its generation ends, a dropped stream's included.
    assert after_hang_ups == 200


# -- oversized or malformed chat ---------------------------------------------------------------


NUMBERS = " ".join(str(n) for n in range(5600))  # ~28,000 characters, over 4096 tokens


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (
            {"model": "alice", "messages": [{"role": "user", "content": "hi"}] * 300},
            400,
            "messages",
        ),
        (
            {"model": "alice", "messages": [{"role": "user", "content": "x" * 8000}] * 5},
            413,
            "characters",
        ),
        ({"model": "alice", "messages": [{"role": "user", "content": NUMBERS}]}, 413, "tokens"),
        ({"model": "alice", "messages": [{"role": "user", "content": 12345}]}, 400, "content"),
        ({"model": "alice", "messages": [{"role": "user", "content": [7]}]}, 400, "content"),
        ({"model": "alice", "messages": "hello"}, 400, "messages"),
    ],
    ids=["300-messages", "40k-chars-in-turns", "over-4096-tokens", "number", "list-of-int", "str"],
)
def test_an_oversized_or_malformed_chat_is_refused_with_its_reason_never_500(
    server: Server, body: dict[str, Any], status: int, reason: str
) -> None:
    response = httpx.post(f"{server.url}{CHAT}", json=body, headers=auth(ALICE_KEY), timeout=30)

    assert response.status_code == status, response.text
    error = response.json()["error"]  # the shape the OpenAI SDKs parse
    assert reason in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_chat_body_that_is_not_json_is_refused_with_400(server: Server) -> None:
    response = httpx.post(
        f"{server.url}{CHAT}",
        content=b'{"model": "alice", "messages": [',
        headers=auth(ALICE_KEY) | {"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"]


# -- what is served to whom --------------------------------------------------------------------


def test_docs_and_openapi_are_not_served_by_default(server: Server) -> None:
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(f"{server.url}{path}", headers=auth(ADMIN_KEY)).status_code == 404
        assert httpx.get(f"{server.url}{path}").status_code != 200


def test_docs_and_openapi_are_served_when_the_setting_turns_them_on(in_process: Any) -> None:
    async def fetch() -> tuple[int, int, dict[str, Any]]:
        transport = httpx.ASGITransport(app=in_process(Limits(docs=True)))
        async with httpx.AsyncClient(transport=transport, base_url="http://twin") as client:
            docs = await client.get("/docs")
            schema = await client.get("/openapi.json")
            return docs.status_code, schema.status_code, schema.json()

    docs, schema, body = asyncio.run(fetch())
    assert (docs, schema) == (200, 200)
    assert GENERATE.replace("alice", "{author}") in body["paths"]


@pytest.mark.parametrize("behind_proxy", [False, True], ids=["direct", "uvicorn-proxy-headers"])
def test_metrics_are_refused_to_another_address_whatever_it_claims(
    in_process: Any, behind_proxy: bool
) -> None:
    app: Any = in_process()
    if behind_proxy:  # as serve runs it: X-Forwarded-For trusted from loopback only
        app = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1,::1")

    async def metrics(client_address: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://twin") as client:
            response = await client.get(
                "/metrics",
                headers=auth(ADMIN_KEY) | {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "::1"},
            )
            return response.status_code

    assert asyncio.run(metrics("10.0.0.5")) == 404
    assert asyncio.run(metrics("127.0.0.1")) == 200


# -- what a client is told when the model fails ------------------------------------------------


def test_a_failing_backend_is_reported_by_code_without_its_url_password_or_text(
    server: Server,
) -> None:
    server.fake.failure = "CUDA out of memory at /srv/models/private-weights"
    try:
        plain = httpx.post(
            f"{server.url}{GENERATE}",
            json={"prompt": "A post", "max_new_tokens": 3, "stream": False},
            headers=auth(ALICE_KEY),
            timeout=30,
        )
        with httpx.stream(
            "POST",
            f"{server.url}{CHAT}",
            json={"model": "alice", "messages": [{"role": "user", "content": "x"}], "stream": True},
            headers=auth(ALICE_KEY),
            timeout=30,
        ) as streamed:
            chunks = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    finally:
        server.fake.failure = None

    assert plain.status_code == 502
    body = plain.json()
    assert (body["type"], body["code"]) == ("error", "backend_error")
    error = json.loads(chunks[-1].removeprefix("data: "))["error"]
    assert error["code"] == "backend_error"
    assert error["message"] == body["message"]
    for told in (plain.text, "\n".join(chunks)):
        for secret in (PASSWORD, "twin:", "127.0.0.1", server.fake.url, "CUDA", "private-weights"):
            assert secret not in told


def test_a_local_key_file_other_users_may_read_is_refused_naming_chmod_600(
    server: Server,
) -> None:
    # Without LLM_TWIN_API_KEYS, serve would admit whoever holds this home's key file.
    path = server.home / "api-key"
    path.write_text("twin-" + "k" * 40 + "\n", encoding="utf-8")
    path.chmod(0o644)
    try:
        refused = run_cli(server.home, "serve", "--port", str(free_port()))
    finally:
        path.unlink()

    assert refused.returncode == 1
    assert "chmod 600" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "k" * 40 not in refused.stderr


def test_the_log_names_the_backend_failure_with_its_password_masked(server: Server) -> None:
    # Last: it stops the server to read everything it logged.
    os.killpg(server.process.pid, signal.SIGINT)
    _, errors = server.process.communicate(timeout=60)
    log = errors.decode()
    assert "private-weights" in log  # the operator still learns what broke
    assert "***@127.0.0.1" in log  # and where, without the credentials
    assert PASSWORD not in log and ALICE_KEY not in log and ADMIN_KEY not in log
