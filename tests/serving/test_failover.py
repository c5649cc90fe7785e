"""A worker killed mid-answer: the request is still answered, as a new attempt, in time.

Two ``llm-twin serve`` processes, one after the other, on a private stack: the
first is SIGKILLed while streaming a slow answer; the second joins the group,
gets the partition with the unacknowledged request and answers it again as
attempt 2, from seq 0, before the deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from infra import credentials, localstack
from infra.ports import free_port
from infra.settings import PlatformSettings
from schemas.generation import DoneEvent, ErrorEvent, ReplyEvent, TokenEvent
from serving.replies import open_channel
from tests.fake_tgi import FakeTgi, running
from tests.serving.test_api import start_serve, wait_healthy

TOKENS = 40


def test_a_request_survives_its_worker_being_killed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("failover-home")
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    processes = []
    try:
        bootstrap = localstack.endpoints(settings).kafka_bootstrap_servers
        assert bootstrap is not None
        with running(FakeTgi(token_delay_s=0.1)) as fake:
            first_port = free_port()
            first = start_serve(home, fake, first_port)
            processes.append(first)
            wait_healthy(f"http://127.0.0.1:{first_port}", first)
            # Signed with the home's key, as `generate` signs: `serve` verifies each request.
            channel, claim = open_channel(
                bootstrap, home, one_record_per_batch=True, signer=credentials.signer(settings)
            )

            async def ask() -> list[ReplyEvent]:
                request = channel.new_request(
                    "alice", "A long answer", max_new_tokens=TOKENS, timeout_s=90
                )
                events: list[ReplyEvent] = []
                async for event in channel.stream(request):
                    events.append(event)
                    if len(events) == 3:  # mid-stream: the worker dies
                        os.killpg(first.pid, signal.SIGKILL)
                        first.wait(timeout=30)
                        second_port = free_port()
                        processes.append(start_serve(home, fake, second_port))
                return events

            try:
                started = time.monotonic()
                events = asyncio.run(ask())
                elapsed = time.monotonic() - started
            finally:
                channel.close()
                if claim is not None:
                    claim.release()
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        localstack.down(settings)

    finals = [e for e in events if isinstance(e, DoneEvent | ErrorEvent)]
    assert len(finals) == 1 and events[-1] is finals[0]
    assert isinstance(finals[0], DoneEvent), finals[0]
    assert finals[0].attempt == 2
    retried = [e for e in events if isinstance(e, TokenEvent) and e.attempt == 2]
    assert [e.seq for e in retried] == list(range(TOKENS))
    assert finals[0].text == "".join(e.text for e in retried)
    assert elapsed < 90
