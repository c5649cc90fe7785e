"""The main job in one command, and ``generate`` with no server running.

``llm-twin up`` with a tiny model built here (LLM_TWIN_MODEL, the same path a
production model directory takes): it starts the stack, imports the sources,
ingests them, prints the API address and a curl line that works, and on
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from infra import localstack
from infra.ports import free_port
from infra.settings import PlatformSettings
from tests import tiny_model
from tests.support import cli_env, run_cli


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny-model"))


def start_cli(home: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """``llm-twin ARGS`` running in a session of its own (a Ctrl-C reaches all of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "llm_twin", *args],
        env=cli_env(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_generate_without_a_server_runs_a_consumer_in_process(
    tmp_path_factory: pytest.TempPathFactory, model: Path
) -> None:
    home = tmp_path_factory.mktemp("generate-home")
    assert run_cli(home, "generate", "--author", "ann", "hello").returncode == 3  # no stack
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    try:
        result = run_cli(
            home,
            "generate",
            "--author",
            "ann",
            "--json",
            "--max-new-tokens",
            "6",
            "--temperature",
            "0",
            "Write a post about streams",
            LLM_TWIN_MODEL=str(model),
        )
    finally:
        localstack.down(settings)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "done"
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert events[-1]["text"] == "".join(t["text"] for t in tokens)
    assert events[-1]["usage"]["completion_tokens"] <= 6


def test_up_brings_up_everything_and_ctrl_c_leaves_nothing_behind(
    tmp_path: Path, model: Path
) -> None:
    home = tmp_path / "home"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "bread.md").write_text(
        "---\ntitle: Rye at dawn\n---\nI feed my rye starter at dawn and bake by noon.\n"
    )
    port = free_port()
    process = start_cli(
        home, "up", "--author", "baker", "--port", str(port), str(notes), LLM_TWIN_MODEL=str(model)
    )
    try:
        assert process.stdout is not None
        printed = ""
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in printed:
            assert time.monotonic() < deadline, printed
            line = process.stdout.readline().decode()
            assert line or process.poll() is None, process.communicate()[1].decode()[-3000:]
            printed += line
        assert f"http://127.0.0.1:{port}" in printed
        curl = next(line for line in printed.splitlines() if "curl -N" in line)
        continuation = printed.split(curl, 1)[1].splitlines()[1]
        argv = shlex.split(curl.rstrip("\\") + " " + continuation)
        argv[argv.index("-d") + 1] = json.dumps({"prompt": "About rye", "max_new_tokens": 5})
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert answer.returncode == 0, answer.stderr
        events = [
            json.loads(line.removeprefix("data: "))
            for line in answer.stdout.splitlines()
            if line.startswith("data: ")
        ]
        assert events[-1]["type"] == "done", events
        assert [s["title"] for s in events[-1]["sources"]] == ["Rye at dawn"]
        state = localstack.load_state(PlatformSettings(home=home))
        assert state is not None and state.kafka is not None and state.mongodb is not None
        stack_pids = [state.kafka.pid, state.mongodb.pid]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors.decode()[-3000:]
    assert b"Traceback" not in errors
    assert not any(psutil.pid_exists(pid) for pid in stack_pids)
    assert not re.search(rb"twin-[A-Za-z0-9_-]{20,}", errors)  # the key is printed once, on stdout


def read_until(
    stream: Any, marker: bytes, process: subprocess.Popen[bytes], timeout_s: float
) -> bytes:
    """What ``stream`` printed up to the line holding ``marker``."""
    printed = b""
    deadline = time.monotonic() + timeout_s
    while marker not in printed:
        assert time.monotonic() < deadline, printed.decode()[-3000:]
        line = stream.readline()
        assert line or process.poll() is None, printed.decode()[-3000:]
        printed += line
    return printed


def test_ctrl_c_while_up_is_still_indexing_stops_everything_without_a_traceback(
    tmp_path: Path, model: Path
) -> None:
    home = tmp_path / "home"
    process = start_cli(home, "up", "--port", str(free_port()), LLM_TWIN_MODEL=str(model))
    try:
        assert process.stderr is not None
        printed = read_until(process.stderr, b"indexing docs's documents", process, 180)
        state = localstack.load_state(PlatformSettings(home=home))
        assert state is not None and state.kafka is not None and state.mongodb is not None
        stack_pids = [state.kafka.pid, state.mongodb.pid]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        out, errors = process.communicate(timeout=90)
    errors = printed + errors
    assert process.returncode == 0, errors.decode()[-3000:]
    assert b"is ready at" not in out  # it really was still indexing
    assert b"Traceback" not in errors and b"Exception" not in errors, errors.decode()[-3000:]
    assert errors.rstrip().endswith(b"stopped")
    assert not any(psutil.pid_exists(pid) for pid in stack_pids)


def test_an_embedder_that_cannot_load_ends_up_with_one_sentence(
    tmp_path: Path, model: Path
) -> None:
    home = tmp_path / "home"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "one.md").write_text("# One\n\nA note.\n")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    process = start_cli(
        home,
        "up",
        "--port",
        str(free_port()),
        str(notes),
        LLM_TWIN_MODEL=str(model),
        LLM_TWIN_INGEST_EMBEDDING_MODEL=str(not_a_model),
    )
    _, errors = process.communicate(timeout=180)
    assert process.returncode == 1, errors.decode()[-3000:]
    assert b"Traceback" not in errors, errors.decode()[-3000:]
    assert f"cannot load the embedding model {not_a_model}".encode() in errors
    assert b"stopping the broker and warehouse" in errors  # what up started, it stops
    assert localstack.load_state(PlatformSettings(home=home)) is None


def test_serve_on_a_port_in_use_says_so_and_sigterm_stops_it_cleanly(
    tmp_path: Path, model: Path
) -> None:
    home = tmp_path / "home"
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = run_cli(
                home, "serve", "--port", str(taken.getsockname()[1]), LLM_TWIN_MODEL=str(model)
            )
        assert busy.returncode == 1
        assert busy.stderr.strip().splitlines()[-1].startswith("cannot listen on 127.0.0.1:")
        assert "Traceback" not in busy.stderr
        port = free_port()
        process = start_cli(home, "serve", "--port", str(port), LLM_TWIN_MODEL=str(model))
        try:
            assert process.stderr is not None
            read_until(process.stderr, b"serving on", process, 120)
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["parts"]) == {"ingest", "consumer", "api"}
        finally:
            process.send_signal(signal.SIGTERM)
            _, errors = process.communicate(timeout=90)
        assert process.returncode == 0, errors.decode()[-3000:]
        assert b"Traceback" not in errors
        assert errors.rstrip().endswith(b"stopped")
        assert not (home / "serve.json").exists()
    finally:
        localstack.down(settings)
