"""Supervised parts: each runs as a named task with a state and a policy for when it dies.

A part is a coroutine that runs until it is cancelled; it calls ``ready()``
once it does its job (the consumer has its partitions, the API listens). If it
raises, or returns by itself, the supervisor decides:

- :class:`Fatal` (a model or store that cannot be opened, a bad setting): the
  whole process stops, with the reason;
- anything else (a lost connection, a crash): the part is restarted after a
  backoff that doubles from :attr:`Policy.backoff_s`, at most
  :attr:`Policy.max_restarts` times in a row; a part that stayed up for
  :attr:`Policy.healthy_after_s` starts its count again. An exhausted budget
  stops the process like a fatal failure.

Stopping (Ctrl-C, SIGTERM, a fatal part) is one path: the parts are cancelled
one after another, the last listed first (the API drains while the consumer
still answers), all within the longest of their stop timeouts
(:attr:`Policy.stop_timeout_s` plus a part's own); a second stop stops waiting.
A thread that does not end in time is left behind as a daemon (the process
exit ends it) and said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.redact import without_credentials

log = logging.getLogger(__name__)

# A reason longer than this is cut: it is shown on /readyz and in one line of a terminal.
MAX_REASON_CHARS = 300

Ready = Callable[[], None]


class Fatal(Exception):
    """A failure no restart can mend; its message is the sentence the user sees."""


class State(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Policy:
    max_restarts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    # A part up this long is healthy again: a fault an hour later is not the same fault.
    healthy_after_s: float = 60.0
    stop_timeout_s: float = 30.0


@dataclass
class Part:
    name: str
    run: Callable[[Ready], Awaitable[None]]
    # Seconds this part may take to stop, beyond the policy's (a trainer mid-step).
    stop_timeout_s: float | None = None


@dataclass
class Status:
    state: State = State.STARTING
    restarts: int = 0
    reason: str | None = None
    since: float = field(default_factory=time.time)

    def report(self, *, reasons: bool) -> dict[str, Any]:
        shown: dict[str, Any] = {"state": self.state.value, "restarts": self.restarts}
        if reasons and self.reason is not None:
            shown["reason"] = self.reason
        return shown


class Supervisor:
    """Runs parts until :meth:`stop` or a fatal failure; :meth:`run` says which."""

    def __init__(self, policy: Policy, *, say: Callable[[str], None]) -> None:
        self._policy = policy
        self._tell = say
        self._status: dict[str, Status] = {}
        self._stop = asyncio.Event()
        self._forced = asyncio.Event()
        self._fatal: str | None = None

    def expect(self, *names: str) -> None:
        """Parts about to run, shown as starting from now (/readyz answers before they start)."""
        for name in names:
            self._status.setdefault(name, Status())

    def ready(self, *names: str) -> bool:
        """Whether every part (or every one of ``names``) is ready."""
        chosen = [self._status[n] for n in names if n in self._status] if names else None
        states = chosen if chosen is not None else list(self._status.values())
        return bool(states) and all(s.state is State.READY for s in states)

    def report(self, *, reasons: bool = True) -> dict[str, dict[str, Any]]:
        return {name: s.report(reasons=reasons) for name, s in self._status.items()}

    def stop(self) -> None:
        """Stop every part; asked again while stopping, stop waiting for them (a second Ctrl-C).

        Safe from a signal handler on the loop.
        """
        if self._stop.is_set():
            self._say("stopping now, without waiting for the parts")
            self._forced.set()
        self._stop.set()

    async def run(self, parts: list[Part]) -> None:
        """Run ``parts`` until stopped; raise :class:`Fatal` when one could not be kept up.

        Parts are listed in the order they depend on each other (the API last: it needs
        the consumer) and stopped in the reverse order.
        """
        self.expect(*(part.name for part in parts))
        tasks = {asyncio.create_task(self._keep(part), name=part.name): part for part in parts}
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            await self._stop_all(tasks)
        for task, part in tasks.items():  # a part's keeper that died some other way
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None and self._fatal is None:
                self._fatal = f"{part.name}: {reason_of(error)}"
        if self._fatal is not None:
            raise Fatal(self._fatal)

    async def _keep(self, part: Part) -> None:
        status = self._status[part.name]
        consecutive = 0
        while True:
            started = time.monotonic()
            self._set(status, State.STARTING)
            try:
                await part.run(lambda: self._set(status, State.READY))
                reason = "it stopped by itself"
            except Fatal as fatal:
                self._fail(part.name, status, reason_of(fatal), f"{part.name}: {reason_of(fatal)}")
                return
            except Exception as error:  # every crash is the policy's to judge
                reason = reason_of(error)
                log.debug("part %s failed", part.name, exc_info=True)
            if self._stop.is_set():  # it ended because everything is stopping
                return
            if time.monotonic() - started >= self._policy.healthy_after_s:
                consecutive = 0
            if consecutive >= self._policy.max_restarts:
                times = f" {consecutive + 1} times in a row, last" if consecutive else ""
                self._fail(part.name, status, reason, f"{part.name} failed{times}: {reason}")
                return
            consecutive += 1
            status.restarts += 1
            delay = min(self._policy.backoff_s * 2 ** (consecutive - 1), self._policy.max_backoff_s)
            self._set(status, State.RESTARTING, reason)
            self._say(
                f"{part.name} failed: {reason}; restarting in {delay:g} s "
                f"({consecutive} of {self._policy.max_restarts})"
            )
            await asyncio.sleep(delay)

    def _fail(self, name: str, status: Status, reason: str, sentence: str) -> None:
        self._set(status, State.FAILED, reason)
        if self._fatal is None:  # the first part to fail is the one that stops the process
            self._fatal = sentence
        self._stop.set()  # no other part restarts while the process stops

    async def _stop_all(self, tasks: dict[asyncio.Task[None], Part]) -> None:
        """Each part in turn, the last listed first, all within the longest stop timeout."""
        began = time.monotonic()
        longest = max(
            (self._policy.stop_timeout_s + (p.stop_timeout_s or 0) for p in tasks.values()),
            default=0.0,
        )
        forced = asyncio.create_task(self._forced.wait())
        try:
            for task, part in reversed(list(tasks.items())):
                status = self._status[part.name]
                if not task.done():
                    self._set(status, State.STOPPING)
                    task.cancel()
                    timeout = self._policy.stop_timeout_s + (part.stop_timeout_s or 0)
                    left = max(0.0, min(began + timeout, began + longest) - time.monotonic())
                    await asyncio.wait([task, forced], timeout=left, return_when="FIRST_COMPLETED")
                    if not task.done():
                        self._say(f"{part.name} did not stop within {timeout:g} s; leaving it")
                if status.state is not State.FAILED:
                    self._set(status, State.STOPPED)
        finally:
            forced.cancel()

    def _say(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr
            self._tell(text)

    def _set(self, status: Status, state: State, reason: str | None = None) -> None:
        status.state, status.reason, status.since = state, reason, time.time()


def threaded(
    name: str,
    target: Callable[[threading.Event, Ready], None],
    *,
    stop_timeout_s: float | None = None,
) -> Part:
    """A part whose work blocks (a Bytewax dataflow, a training loop), run in its own thread.

    ``target(stop, ready)`` runs until ``stop`` is set. The thread is a daemon:
    one that outlives its stop timeout does not keep the process alive.
    """

    async def run(ready: Ready) -> None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def settle(error: BaseException | None) -> None:
            if finished.done():
                return
            if error is None:
                finished.set_result(None)
            else:
                finished.set_exception(error)

        def body() -> None:
            error: BaseException | None = None
            try:
                target(stop, lambda: _call_soon(loop, ready))
            except Exception as raised:  # noqa: BLE001  # handed to the supervisor
                error = raised
            except BaseException as raised:  # noqa: BLE001  # SystemExit in a thread: a failure
                error = RuntimeError(f"the thread ended with {type(raised).__name__}")
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=body, name=f"llm-twin-{name}", daemon=True).start()
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            stop.set()
            # The supervisor bounds this wait; whatever the thread raises now is its stop.
            with contextlib.suppress(Exception):
                await finished
            raise

    return Part(name, run, stop_timeout_s)


def _call_soon(loop: asyncio.AbstractEventLoop, function: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(function)


def reason_of(error: BaseException) -> str:
    """One line saying why: credentials masked, the type named, at most MAX_REASON_CHARS."""
    text = " ".join(without_credentials(str(error)).split()) or type(error).__name__
    if not isinstance(error, Fatal) and type(error).__name__ not in text:
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
