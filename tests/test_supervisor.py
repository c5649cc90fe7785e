"""The supervisor's policies, on parts that fail on cue: restart, give up, stop, in bounded time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from llm_twin.supervisor import Fatal, Part, Policy, Ready, State, Supervisor, threaded

FAST = Policy(max_restarts=3, backoff_s=0.05, max_backoff_s=0.2, stop_timeout_s=2.0)


def forever(name: str, started: list[str] | None = None) -> Part:
    async def run(ready: Ready) -> None:
        if started is not None:
            started.append(name)
        ready()
        await asyncio.Event().wait()

    return Part(name, run)


def run_until(
    supervisor: Supervisor, parts: list[Part], condition: object, timeout_s: float
) -> None:
    """Run the supervisor until ``condition()`` holds, then stop it; fail past ``timeout_s``."""

    supervisor.expect(*(part.name for part in parts))

    async def main() -> None:
        running = asyncio.create_task(supervisor.run(parts))
        deadline = time.monotonic() + timeout_s
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, supervisor.report()
            assert not running.done(), running.exception()
            await asyncio.sleep(0.01)
        supervisor.stop()
        await asyncio.wait_for(running, timeout_s)

    asyncio.run(main())


def test_a_part_that_crashes_is_restarted_with_backoff_and_the_restart_is_said() -> None:
    said: list[str] = []
    supervisor = Supervisor(FAST, say=said.append)
    attempts: list[float] = []

    async def flaky(ready: Ready) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise ConnectionError("the broker went away")
        ready()
        await asyncio.Event().wait()

    run_until(
        supervisor,
        [Part("consumer", flaky), forever("api")],
        lambda: supervisor.ready(),
        timeout_s=10,
    )
    assert len(attempts) == 3
    # The backoff doubles: 0.05 s, then 0.1 s.
    assert attempts[1] - attempts[0] >= 0.05 and attempts[2] - attempts[1] >= 0.1
    assert said[0] == (
        "consumer failed: ConnectionError: the broker went away; restarting in 0.05 s (1 of 3)"
    )
    assert len(said) == 2
    assert supervisor.report()["consumer"]["restarts"] == 2
    assert supervisor.report()["consumer"]["state"] == "stopped"


def test_readiness_flips_while_a_part_restarts_and_comes_back() -> None:
    supervisor = Supervisor(Policy(max_restarts=3, backoff_s=0.3), say=lambda text: None)
    broken = threading.Event()
    seen: list[tuple[bool, str, str | None]] = []

    async def part(ready: Ready) -> None:
        ready()
        while not broken.is_set():
            await asyncio.sleep(0.01)
        broken.clear()
        raise OSError("lost the warehouse")

    def watch() -> bool:
        report = supervisor.report()["ingest"]
        seen.append((supervisor.ready(), report["state"], report.get("reason")))
        if len(seen) == 20:
            broken.set()
        return len(seen) > 20 and supervisor.ready()

    run_until(supervisor, [Part("ingest", part), forever("api")], watch, timeout_s=10)
    assert (True, "ready", None) in seen
    assert (False, "restarting", "OSError: lost the warehouse") in seen
    assert seen[-1] == (True, "ready", None)


def test_an_exhausted_restart_budget_stops_every_part_with_the_reason() -> None:
    supervisor = Supervisor(FAST, say=lambda text: None)
    cancelled: list[str] = []

    async def steady(ready: Ready) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("api")
            raise

    async def broken(ready: Ready) -> None:
        raise RuntimeError("the trainer fell over")

    started = time.monotonic()
    with pytest.raises(Fatal) as failure:
        asyncio.run(supervisor.run([Part("api", steady), Part("trainer", broken)]))
    assert str(failure.value) == (
        "trainer failed 4 times in a row, last: RuntimeError: the trainer fell over"
    )
    assert cancelled == ["api"]
    assert supervisor.report()["trainer"]["state"] == "failed"
    assert supervisor.report()["api"]["state"] == "stopped"
    assert time.monotonic() - started < 5


def test_a_fatal_failure_is_never_restarted() -> None:
    supervisor = Supervisor(FAST, say=lambda text: None)
    attempts: list[int] = []

    async def cannot_open(ready: Ready) -> None:
        attempts.append(1)
        raise Fatal("cannot open the vector store: permission denied")

    with pytest.raises(Fatal, match=r"^store: cannot open the vector store: permission denied$"):
        asyncio.run(supervisor.run([Part("store", cannot_open), forever("api")]))
    assert attempts == [1]


def test_a_part_up_long_enough_starts_its_restart_count_again() -> None:
    policy = Policy(max_restarts=1, backoff_s=0.01, healthy_after_s=0.2)
    supervisor = Supervisor(policy, say=lambda text: None)
    attempts: list[int] = []

    async def fails_after_a_while(ready: Ready) -> None:
        attempts.append(1)
        ready()
        await asyncio.sleep(0.25)
        raise ConnectionError("dropped")

    # One restart allowed in a row, yet it keeps going: each failure came after 0.25 s up.
    run_until(supervisor, [Part("ingest", fails_after_a_while)], lambda: len(attempts) >= 4, 10)
    assert supervisor.report()["ingest"]["restarts"] >= 3


def test_a_part_that_stops_by_itself_counts_as_a_failure() -> None:
    supervisor = Supervisor(Policy(max_restarts=0), say=lambda text: None)

    async def quits(ready: Ready) -> None:
        ready()

    with pytest.raises(Fatal, match="it stopped by itself"):
        asyncio.run(supervisor.run([Part("consumer", quits)]))


def test_a_thread_that_raises_is_the_parts_failure_and_a_stop_reaches_the_thread() -> None:
    supervisor = Supervisor(FAST, say=lambda text: None)
    runs: list[threading.Event] = []

    def dataflow(stop: threading.Event, ready: Ready) -> None:
        runs.append(stop)
        if len(runs) == 1:
            raise ConnectionError("the dataflow lost its broker")
        ready()
        stop.wait()

    run_until(supervisor, [threaded("ingest", dataflow)], lambda: supervisor.ready(), 10)
    assert len(runs) == 2 and all(stop.is_set() for stop in runs[1:])
    assert supervisor.report()["ingest"] == {"state": "stopped", "restarts": 1}
    for thread in threading.enumerate():  # ended: at most its last line is left to run
        if thread.name == "llm-twin-ingest":
            thread.join(2)
            assert not thread.is_alive()


def test_stopping_is_bounded_even_when_a_thread_ignores_it() -> None:
    said: list[str] = []
    supervisor = Supervisor(Policy(stop_timeout_s=0.3), say=said.append)
    release = threading.Event()

    def stubborn(stop: threading.Event, ready: Ready) -> None:
        ready()
        release.wait(30)  # a training step that does not look at ``stop``

    started = time.monotonic()
    try:
        run_until(supervisor, [threaded("trainer", stubborn)], lambda: supervisor.ready(), 10)
        assert time.monotonic() - started < 5
        assert said == ["trainer did not stop within 0.3 s; leaving it"]
        assert supervisor.report()["trainer"]["state"] == State.STOPPED
    finally:
        release.set()


def test_reasons_keep_no_credentials_and_stay_short() -> None:
    supervisor = Supervisor(Policy(max_restarts=0), say=lambda text: None)

    async def leaks(ready: Ready) -> None:
        raise ConnectionError("mongodb://twin:s3cret@db.internal:27017 refused " + "x" * 1000)

    with pytest.raises(Fatal) as failure:
        asyncio.run(supervisor.run([Part("ingest", leaks)]))
    assert str(failure.value).startswith("ingest failed: ConnectionError: mongodb://***@db")
    assert "s3cret" not in str(failure.value)
    reason = supervisor.report()["ingest"]["reason"]
    assert "s3cret" not in reason and len(reason) <= 300
    assert "reason" not in supervisor.report(reasons=False)["ingest"]


def test_parts_stop_at_once_so_the_longest_timeout_bounds_the_whole_stop() -> None:
    said: list[str] = []
    supervisor = Supervisor(Policy(stop_timeout_s=0.5), say=said.append)
    release = threading.Event()

    def stubborn(stop: threading.Event, ready: Ready) -> None:
        ready()
        release.wait(30)

    parts = [threaded(f"part-{n}", stubborn) for n in range(4)]
    try:
        started = time.monotonic()
        run_until(supervisor, parts, lambda: supervisor.ready(), 10)
        # Four parts that ignore the stop, 0.5 s each: 0.5 s in all, not 2 s.
        assert time.monotonic() - started < 1.8
        assert len(said) == 4
    finally:
        release.set()


def test_parts_stop_in_the_reverse_order_so_the_api_drains_while_the_consumer_answers() -> None:
    supervisor = Supervisor(FAST, say=lambda text: None)
    events: list[str] = []

    def part(name: str) -> Part:
        async def run(ready: Ready) -> None:
            ready()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                events.append(f"{name} stopping")
                await asyncio.sleep(0.05)  # draining: whatever it needs must still run
                events.append(f"{name} stopped")
                raise

        return Part(name, run)

    run_until(supervisor, [part("ingest"), part("consumer"), part("api")], supervisor.ready, 10)
    assert events == [
        "api stopping",
        "api stopped",
        "consumer stopping",
        "consumer stopped",
        "ingest stopping",
        "ingest stopped",
    ]


def test_a_second_stop_stops_waiting_for_the_parts() -> None:
    said: list[str] = []
    supervisor = Supervisor(Policy(stop_timeout_s=30), say=said.append)
    release = threading.Event()

    def stubborn(stop: threading.Event, ready: Ready) -> None:
        ready()
        release.wait(60)

    async def main() -> None:
        running = asyncio.create_task(supervisor.run([threaded("trainer", stubborn)]))
        while not supervisor.ready():
            await asyncio.sleep(0.01)
        supervisor.stop()  # Ctrl-C
        await asyncio.sleep(0.2)
        assert not running.done()  # waiting for the trainer's step
        supervisor.stop()  # Ctrl-C again
        await asyncio.wait_for(running, 5)

    started = time.monotonic()
    try:
        asyncio.run(main())
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert said[0] == "stopping now, without waiting for the parts"


def test_a_part_that_fails_while_everything_stops_is_not_restarted() -> None:
    supervisor = Supervisor(FAST, say=lambda text: None)
    attempts: list[int] = []

    async def fails_on_stop(ready: Ready) -> None:
        attempts.append(1)
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("the socket closed under it") from None

    run_until(supervisor, [Part("api", fails_on_stop)], supervisor.ready, 10)
    assert attempts == [1]
    assert supervisor.report()["api"]["state"] == "stopped"


def test_a_thread_ending_with_system_exit_is_a_failure_of_its_part() -> None:
    supervisor = Supervisor(Policy(max_restarts=0), say=lambda text: None)

    def exits(stop: threading.Event, ready: Ready) -> None:
        raise SystemExit(3)

    with pytest.raises(Fatal, match="the thread ended with SystemExit"):
        asyncio.run(supervisor.run([threaded("ingest", exits)]))
