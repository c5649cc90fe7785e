"""`up`'s parts under supervision, on the real local stack: each killed in turn.

The composition root runs in this test's main thread exactly as `up` runs it
(`runtime.serve` with ingestion, the retrieval consumer, the API and, for the
last test, the trainer), with a tiny model built here. A probe thread breaks
one part at a time the way it breaks in the field: the dataflow's thread
raises, Faust marks the consumer crashed (what its driver does when it loses
the broker), the trainer raises. It then watches `/readyz` and `llm-twin
status`, and stops the process as SIGTERM would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra import localstack
from infra.ports import free_port
from infra.settings import PlatformSettings
from llm_twin import live, runtime, stack
from llm_twin.supervisor import Fatal
from serving.keys import ApiKeys
from tests import tiny_model
from tests.support import EXTERNAL_SETTINGS, run_cli

KEYS = '{"key-ops-0123456789abcdef": ["*"]}'


@dataclass
class Probe:
    """What the probe thread saw, and the failure it met (raised in the main thread)."""

    url: str = ""
    service: runtime.Service | None = None
    loop: asyncio.AbstractEventLoop | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    started: threading.Event = field(default_factory=threading.Event)

    def readyz(self) -> tuple[int, dict[str, Any]]:
        response = httpx.get(f"{self.url}/readyz", timeout=5)
        body: dict[str, Any] = response.json()
        self.seen.append(body)
        return response.status_code, body

    def until(
        self, what: str, check: Callable[[int, dict[str, Any]], bool], timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = self.readyz()
            if check(status, body):
                return
            time.sleep(0.1)
        raise AssertionError(f"/readyz never showed {what}: {self.seen[-3:]}")

    def stop(self) -> None:
        """Stop the parts as SIGTERM does (a process that stopped by itself has no loop left)."""
        assert self.loop is not None and self.service is not None
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.service.supervisor.stop)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def home(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in EXTERNAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("LLM_TWIN_HOME", str(home))
    monkeypatch.setenv("LLM_TWIN_MODEL", str(model))
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    try:
        yield home
    finally:
        localstack.down(settings)


def run_up(
    home: Path, probing: Callable[[Probe], None], *, trainer: bool = False, **policy: Any
) -> Probe:
    """`up`'s parts in this thread until the probe stops them; the probe's failure re-raised."""
    settings = PlatformSettings(home=home, **policy)
    probe = Probe()

    def probe_thread() -> None:
        try:
            assert probe.started.wait(120), "the API never came up"
            probing(probe)
        except BaseException as error:  # noqa: BLE001  # re-raised in the test's thread
            probe.error = error
        finally:
            if probe.service is not None:
                probe.stop()

    def reached(url: str, service: runtime.Service) -> None:
        probe.url, probe.service, probe.loop = url, service, asyncio.get_running_loop()
        probe.started.set()

    watcher = threading.Thread(target=probe_thread, daemon=True)
    watcher.start()
    try:
        runtime.serve(
            settings,
            stack.require(settings),
            runtime.serving_settings(),
            ApiKeys.parse(KEYS),
            host="127.0.0.1",
            port=free_port(),
            ingest=True,
            trainer=trainer,
            say=lambda text: None,
            on_url=reached,
        )
    finally:
        probe.started.set()  # a probe still waiting gives up at once
        watcher.join(30)
        if probe.error is not None:  # what the probe saw explains the ending best
            raise probe.error
    return probe


def no_part_left_running(home: Path) -> None:
    assert live.live_server(home) is None  # the record of the live server is gone
    for thread in threading.enumerate():  # a part's thread ended: its last line may be left
        if thread.name.startswith("llm-twin-"):
            thread.join(5)
    left = [t.name for t in threading.enumerate() if t.name.startswith("llm-twin-")]
    assert left == []


def test_the_dataflow_raising_is_restarted_and_readyz_and_status_say_so(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams.run

    real = streams.run.run
    broken = threading.Event()

    def dataflow(*args: Any, stop: threading.Event, **kwargs: Any) -> None:
        if broken.is_set():
            raise ConnectionError("the dataflow lost the warehouse (injected)")
        mine = threading.Event()  # the real dataflow, ended when the test breaks it

        def relay() -> None:
            while not (stop.is_set() or broken.is_set()):
                time.sleep(0.05)
            mine.set()

        threading.Thread(target=relay, daemon=True).start()
        real(*args, stop=mine, **kwargs)
        if broken.is_set() and not stop.is_set():
            raise ConnectionError("the dataflow lost the warehouse (injected)")

    monkeypatch.setattr(streams.run, "run", dataflow)

    def probing(probe: Probe) -> None:
        probe.until("every part ready", lambda status, body: status == 200, 60)
        assert set(probe.seen[-1]["parts"]) == {"ingest", "consumer", "api"}
        assert httpx.get(f"{probe.url}/livez", timeout=5).json() == {"live": True}
        broken.set()
        probe.until(
            "the dataflow restarting",
            lambda status, body: status == 503 and body["parts"]["ingest"]["restarts"] >= 1,
            30,
        )
        status = run_cli(home, "status", "--json")
        assert status.returncode == 0, status.stderr[-2000:]
        server = json.loads(status.stdout)["server"]
        assert server["ready"] is False
        ingest = server["parts"]["ingest"]
        assert ingest["state"] in ("restarting", "starting") and ingest["restarts"] >= 1
        assert "the dataflow lost the warehouse" in ingest["reason"]
        assert server["parts"]["api"]["state"] == "ready"
        broken.clear()
        probe.until("the dataflow back", lambda status, body: status == 200, 60)
        status = run_cli(home, "status", "--json")
        assert json.loads(status.stdout)["server"]["ready"] is True

    run_up(home, probing, restart_limit=8, restart_backoff_s=1.0)
    no_part_left_running(home)


def test_the_consumer_losing_its_connection_and_the_api_stopping_are_each_restarted(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.server

    real_serve = serving.server._serve
    api_broken = threading.Event()

    async def serve_until_broken(server: Any, listener: Any) -> None:
        async def breaker() -> None:
            while not api_broken.is_set():
                await asyncio.sleep(0.05)
            api_broken.clear()
            server.should_exit = True  # uvicorn ends as if it had stopped by itself

        breaking = asyncio.create_task(breaker())
        try:
            await real_serve(server, listener)
        finally:
            breaking.cancel()

    monkeypatch.setattr(serving.server, "_serve", serve_until_broken)

    def probing(probe: Probe) -> None:
        probe.until("every part ready", lambda status, body: status == 200, 60)
        service, loop = probe.service, probe.loop
        assert service is not None and loop is not None
        first = service.consumer
        # What Faust's Kafka driver does when its consumer loses the broker.
        asyncio.run_coroutine_threadsafe(
            first.app.crash(ConnectionError("lost the broker (injected)")), loop
        ).result(10)
        probe.until(
            "the consumer restarting",
            lambda status, body: (
                status == 503
                and body["parts"]["consumer"]["state"] != "ready"
                and "lost the broker" in (body["parts"]["consumer"].get("reason") or "")
            ),
            30,
        )
        probe.until("the consumer back", lambda status, body: status == 200, 60)
        assert service.consumer is not first
        assert probe.seen[-1]["parts"]["consumer"]["restarts"] == 1
        # The API ends; a new one serves on the same port (connections meanwhile wait).
        api_broken.set()
        time.sleep(0.3)
        probe.until(
            "the API back on its port",
            lambda status, body: status == 200 and body["parts"]["api"]["restarts"] == 1,
            30,
        )

    run_up(home, probing, restart_backoff_s=1.0)
    no_part_left_running(home)


def test_a_trainer_that_keeps_raising_stops_the_process_with_the_reason(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.consumer

    attempts: list[float] = []
    all_up = threading.Event()

    def broken(*args: Any, **kwargs: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            kwargs["on_ready"]()  # as the real one does once the broker answered
            all_up.wait(60)  # the first run lasts until the probe has seen every part up
        raise RuntimeError("the trainer fell over (injected)")

    monkeypatch.setattr(trainer.consumer, "run", broken)
    ended: list[float] = []

    def probing(probe: Probe) -> None:
        probe.until("every part ready", lambda status, body: status == 200, 60)
        assert "trainer" in probe.seen[-1]["parts"]
        all_up.set()
        # The process stops by itself: the API stops answering.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                probe.readyz()
            except httpx.HTTPError:
                ended.append(time.monotonic())
                return
            time.sleep(0.1)
        raise AssertionError(f"the process never stopped: {probe.seen[-3:]}")

    started = time.monotonic()
    with pytest.raises(Fatal) as failure:
        run_up(home, probing, trainer=True, restart_limit=2, restart_backoff_s=0.2)
    assert str(failure.value) == (
        "trainer failed 3 times in a row, last: RuntimeError: the trainer fell over (injected)"
    )
    assert len(attempts) == 3 and ended
    assert time.monotonic() - started < 120
    no_part_left_running(home)
    assert not os.path.exists(home / live.SERVE_RECORD)
