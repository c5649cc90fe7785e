"""``llm-twin serve`` as a user runs it: the HTTP API, the CLI beside it, keys, Ctrl-C.

The server is a real ``llm-twin serve`` process on a private embedded stack,
ingesting in its own thread; the model behind it is a stand-in TGI server in
this process (tests/fake_tgi.py), reached through the real ``tgi`` backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from infra import credentials, kafka, localstack
from infra.ports import free_port
from infra.settings import PlatformSettings
from schemas.documents import RawDocument
from schemas.topics import RAW_DOCUMENTS
from tests.factories import raw_document
from tests.fake_tgi import FakeTgi, running
from tests.support import cli_env, run_cli

ALICE_KEY = "alice-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
KEYS = json.dumps({ALICE_KEY: ["alice"], ADMIN_KEY: ["*"]})
ALICE_TEXT = "My sourdough starter is fed with rye at dawn; the levain peaks by noon."
BOB_TEXT = "Our Kafka consumers commit offsets only after Qdrant has the points."


@dataclass
class Server:
    url: str
    home: Path
    process: subprocess.Popen[bytes]
    fake: FakeTgi
    documents: dict[str, RawDocument]


def publish(home: Path, *documents: RawDocument) -> None:
    bootstrap = localstack.endpoints(PlatformSettings(home=home)).kafka_bootstrap_servers
    assert bootstrap is not None
    # Signed with the home's key, as our producers sign: `serve` verifies every document.
    signer = credentials.signer(PlatformSettings(home=home))
    producer = kafka.make_producer(bootstrap, one_record_per_batch=True)
    with kafka.Publisher(producer, signer) as publisher:
        for document in documents:
            publisher.publish(RAW_DOCUMENTS, str(document.document_id), document)


def start_serve(home: Path, fake: FakeTgi, port: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "llm_twin", "serve", "--port", str(port)],
        env=cli_env(
            home,
            **{
                "LLM_TWIN_BACKEND": "tgi",
                "LLM_TWIN_TGI_URL": fake.url,
                "LLM_TWIN_API_KEYS": KEYS,
            }
            | env,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1].decode()[-3000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become healthy")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("serve-home")
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    documents = {
        "alice": raw_document("alice", "https://alice.example/bread", ALICE_TEXT),
        "bob": raw_document("bob", "https://bob.example/kafka", BOB_TEXT),
    }
    publish(home, *documents.values())
    try:
        with running(FakeTgi()) as fake:
            port = free_port()
            process = start_serve(home, fake, port)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(url, process)
                # With a live serve, `ingest --until-idle` waits for its dataflow.
                waited = run_cli(home, "ingest", "--until-idle")
                assert waited.returncode == 0, waited.stderr[-3000:]
                yield Server(url, home, process, fake, documents)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
    finally:
        localstack.down(settings)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in response.iter_lines()
        if line.startswith("data: ")
    ]


def test_healthz_and_metrics(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "llm_twin_api_tokens_total" in metrics


def test_generate_streams_the_wire_events_as_server_sent_events(server: Server) -> None:
    with httpx.stream(
        "POST",
        f"{server.url}/v1/twins/alice/generate",
        json={"prompt": "A post about my starter", "max_new_tokens": 6},
        headers=auth(ALICE_KEY),
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    *tokens, done = events
    assert [t["type"] for t in tokens] == ["token"] * 6
    assert [t["seq"] for t in tokens] == list(range(6))
    assert done["type"] == "done"
    assert done["text"] == "".join(t["text"] for t in tokens) == "w0 w1 w2 w3 w4 w5 "
    assert [s["document_id"] for s in done["sources"]] == [
        str(server.documents["alice"].document_id)
    ]
    assert done["usage"]["completion_tokens"] == 6
    # The passage reached the model inside the prompt's context block.
    assert ALICE_TEXT in server.fake.prompts()[-1]
    assert BOB_TEXT not in server.fake.prompts()[-1]


def test_generate_without_streaming_returns_the_done_object(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/twins/alice/generate",
        json={"prompt": "Short one", "max_new_tokens": 3, "stream": False},
        headers=auth(ALICE_KEY),
        timeout=60,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "done" and body["text"] == "w0 w1 w2 "


def test_keys_missing_unknown_and_for_another_author_are_refused(server: Server) -> None:
    body = {"prompt": "x", "max_new_tokens": 2}
    generate = f"{server.url}/v1/twins/bob/generate"
    assert httpx.post(generate, json=body).status_code == 401
    assert httpx.post(generate, json=body, headers=auth("not-a-key-at-all-xx")).status_code == 401
    refused = httpx.post(generate, json=body, headers=auth(ALICE_KEY))
    assert refused.status_code == 403
    search = f"{server.url}/v1/twins/bob/search"
    assert httpx.get(search, params={"q": "kafka"}, headers=auth(ALICE_KEY)).status_code == 403
    assert httpx.post(generate, json=body, headers=auth(ADMIN_KEY)).status_code == 200


def test_bad_bodies_are_rejected_with_the_field_named(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/twins/alice/generate",
        json={"prompt": "", "max_new_tokens": 99999},
        headers=auth(ALICE_KEY),
    )
    assert response.status_code == 422
    fields = {error["loc"][-1] for error in response.json()["detail"]}
    assert fields == {"prompt", "max_new_tokens"}


def test_the_official_openai_sdk_works_unchanged(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ALICE_KEY)
    completion = client.chat.completions.create(
        model="alice", messages=[{"role": "user", "content": "About bread"}], max_tokens=4
    )
    assert completion.choices[0].message.content == "w0 w1 w2 w3 "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4

    stream = client.chat.completions.create(
        model="alice",
        messages=[{"role": "user", "content": "About bread"}],
        max_tokens=5,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces) == "w0 w1 w2 w3 w4 "

    assert [model.id for model in client.models.list()] == ["alice"]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="bob", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong-key-0123456789").models.list()


def test_search_over_http_and_the_cli_beside_a_running_serve(server: Server) -> None:
    over_http = httpx.get(
        f"{server.url}/v1/twins/bob/search",
        params={"q": "when are offsets committed", "k": 3},
        headers=auth(ADMIN_KEY),
    ).json()
    assert [r["text"] for r in over_http["results"]] == [BOB_TEXT]
    assert set(over_http["results"][0]) == {"score", "document_id", "title", "source_url", "text"}
    # The CLI goes through the running serve (which holds the store) with its key.
    cli = run_cli(
        server.home,
        "search",
        "--author",
        "bob",
        "--json",
        "when are offsets committed",
        LLM_TWIN_API_KEY=ADMIN_KEY,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads(cli.stdout)["results"] == over_http["results"]


def test_generate_cli_streams_through_the_running_serve(server: Server) -> None:
    result = run_cli(
        server.home,
        "generate",
        "--author",
        "alice",
        "--json",
        "--max-new-tokens",
        "4",
        "Write about rye",
        LLM_TWIN_API_KEY=ADMIN_KEY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["token"] * 4 + ["done"]
    assert events[-1]["text"] == "w0 w1 w2 w3 "


def test_ctrl_c_stops_serve_cleanly(server: Server) -> None:
    os.killpg(server.process.pid, signal.SIGINT)
    _, errors = server.process.communicate(timeout=60)
    assert server.process.returncode == 0, errors.decode()[-3000:]
    assert b"Traceback" not in errors
    assert ALICE_KEY.encode() not in errors and ADMIN_KEY.encode() not in errors
    assert not (server.home / "serve.json").exists()
