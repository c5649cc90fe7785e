"""``llm-twin infra up | status | down``, run as a user runs them, each in a home of its own."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import psutil
import pytest
from pymongo.errors import OperationFailure

from infra import credentials, localstack, warehouse
from infra.health import redact_uri
from infra.settings import PlatformSettings
from tests.factories import raw_document
from tests.support import run_cli


def _status(home: Path, **env: str) -> dict[str, dict[str, object]]:
    result = run_cli(home, "infra", "status", "--json", **env)
    assert result.returncode == 0, result.stderr
    status: dict[str, dict[str, object]] = json.loads(result.stdout)
    return status


def _up(home: Path, **env: str) -> dict[str, object]:
    result = run_cli(home, "infra", "up", "--json", **env)
    assert result.returncode == 0, result.stderr
    status: dict[str, object] = json.loads(result.stdout)
    return status


def _pids(home: Path) -> list[int]:
    state = json.loads((home / "stack.json").read_text())
    return [state[name]["pid"] for name in ("kafka", "mongodb") if state.get(name)]


def _answers(address: str) -> bool:
    where = address.removeprefix("mongodb://").rpartition("@")[2].partition("/")[0]
    host, _, port = where.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _logged_in_uri(home: Path) -> str:
    """The warehouse's address with its login, as our commands connect (status shows neither)."""
    uri = localstack.endpoints(PlatformSettings(home=home)).mongodb_uri
    assert uri is not None
    return uri


def test_up_status_down_leave_nothing_behind(tmp_path: Path) -> None:
    first = _up(tmp_path)
    assert first["started"] == ["kafka", "mongodb"]
    pids = _pids(tmp_path)
    status = _status(tmp_path)
    assert {name: status[name]["ok"] for name in status} == {
        "kafka": True,
        "mongodb": True,
        "qdrant": True,
    }
    assert status["qdrant"]["location"] == str(tmp_path / "qdrant")
    addresses = [str(status["kafka"]["bootstrap_servers"]), str(status["mongodb"]["uri"])]

    again = _up(tmp_path)
    assert again["started"] == []
    assert again["kafka"] == first["kafka"]
    assert _pids(tmp_path) == pids

    down = run_cli(tmp_path, "infra", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped: kafka, mongodb" in down.stdout
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert not any(_answers(address) for address in addresses)
    assert not (tmp_path / "stack.json").exists()

    nothing = run_cli(tmp_path, "infra", "down")
    assert nothing.returncode == 0
    assert "nothing was running" in nothing.stdout
    after = _status(tmp_path)
    assert after["kafka"] == {
        "bootstrap_servers": "",
        "ok": False,
        "embedded": True,
        "incarnation_id": None,
    }
    assert after["mongodb"]["ok"] is False


def test_status_prints_a_table_without_json(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "infra", "status")
    assert result.returncode == 0
    assert "kafka" in result.stdout
    assert "down" in result.stdout


def test_a_killed_broker_comes_back_as_a_new_incarnation_and_the_warehouse_keeps_its_data(
    tmp_path: Path,
) -> None:
    first = _up(tmp_path)
    uri = _logged_in_uri(tmp_path)
    document = raw_document()
    client = warehouse.connect(uri)
    warehouse.save_raw_document(client["llm_twin"], document)
    client.close()
    kafka_pid, mongodb_pid = _pids(tmp_path)
    os.kill(kafka_pid, 9)
    psutil.wait_procs([psutil.Process(kafka_pid)], timeout=5)
    try:
        second = _up(tmp_path)
        assert second["started"] == ["kafka"]
        assert second["kafka"]["incarnation_id"] != first["kafka"]["incarnation_id"]  # type: ignore[index]
        assert _pids(tmp_path)[1] == mongodb_pid
    finally:
        assert run_cli(tmp_path, "infra", "down").returncode == 0

    # The warehouse is on disk: a new process finds the document again.
    _up(tmp_path)
    try:
        client = warehouse.connect(_logged_in_uri(tmp_path))
        assert warehouse.load_raw_document(client["llm_twin"], document.document_id) == document
        client.close()
    finally:
        run_cli(tmp_path, "infra", "down")


def test_a_missing_broker_binary_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "infra", "up", TANSU_BIN=str(tmp_path / "no-such-tansu"))
    assert result.returncode == 1
    assert "TANSU_BIN" in result.stderr
    assert "not an executable file" in result.stderr
    assert not (tmp_path / "stack.json").exists()


def test_a_broker_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'storage engine exploded' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = run_cli(tmp_path / "home", "infra", "up", TANSU_BIN=str(fake))
    assert result.returncode == 1
    assert "exited during start-up" in result.stderr
    assert "storage engine exploded" in result.stderr


def test_a_broker_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    marker = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 600\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = run_cli(
        tmp_path / "home", "infra", "up", TANSU_BIN=str(fake), LLM_TWIN_STARTUP_TIMEOUT_S="1"
    )
    assert result.returncode == 1
    assert "did not answer" in result.stderr
    assert not psutil.pid_exists(int(marker.read_text()))


def test_a_taken_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(tmp_path, "infra", "up", LLM_TWIN_KAFKA_PORT=str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr


def test_external_services_are_used_and_nothing_is_started(
    tmp_path: Path, stack: localstack.Endpoints
) -> None:
    assert stack.kafka_bootstrap_servers and stack.mongodb_uri
    external = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "MONGODB_URI": stack.mongodb_uri,
    }
    started = _up(tmp_path, **external)
    assert started["started"] == []
    assert started["kafka"]["embedded"] is False  # type: ignore[index]
    assert started["kafka"]["ok"] is True  # type: ignore[index]
    # Shown as status shows it: the login's password masked.
    assert started["mongodb"]["uri"] == redact_uri(stack.mongodb_uri)  # type: ignore[index]
    assert "***@" in str(started["mongodb"]["uri"])  # type: ignore[index]
    assert json.loads((tmp_path / "stack.json").read_text())["kafka"] is None
    down = run_cli(tmp_path, "infra", "down", **external)
    assert "nothing was running" in down.stdout
    assert _answers(stack.kafka_bootstrap_servers)  # the external broker still runs


def test_an_unreachable_external_broker_fails_clearly(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "infra", "up", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", MONGODB_URI="mongodb://x"
    )
    assert result.returncode == 1
    assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1 does not answer" in result.stderr


@pytest.mark.parametrize("secret", ["hunter2"])
def test_a_password_in_mongodb_uri_is_never_printed(
    tmp_path: Path, stack: localstack.Endpoints, secret: str
) -> None:
    uri = f"mongodb://admin:{secret}@127.0.0.1:1/"
    result = run_cli(tmp_path, "infra", "status", "--json", MONGODB_URI=uri)
    assert result.returncode == 0
    assert secret not in result.stdout + result.stderr
    assert json.loads(result.stdout)["mongodb"]["uri"] == "mongodb://admin:***@127.0.0.1:1/"


def test_the_home_is_private_and_the_warehouse_needs_its_login(tmp_path: Path) -> None:
    home = tmp_path / "home"
    previous = os.umask(0o022)  # a common shell umask: files readable by everyone
    try:
        _up(home)
        try:
            uri = _logged_in_uri(home)
            address = str(_status(home)["mongodb"]["uri"])
            login = credentials.warehouse_login(home)
            assert login is not None
            assert login.password not in address, "status never shows the password"
            # Another local user reaching the port without the login reads nothing.
            plain = "mongodb://" + address.rpartition("@")[2]
            stranger = warehouse.connect(plain, timeout_ms=3000)
            with pytest.raises(OperationFailure, match="requires authentication"):
                stranger["llm_twin"]["raw_documents"].find_one()
            stranger.close()
            client = warehouse.connect(uri)
            warehouse.save_raw_document(client["llm_twin"], raw_document())
            client.close()
            # A command run under that umask writes only owner-readable files.
            snapshot = run_cli(home, "schemas", "export", str(home / "schemas"))
            assert snapshot.returncode == 0, snapshot.stderr
        finally:
            run_cli(home, "infra", "down")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for secret in (credentials.SIGNING_KEY_FILE, credentials.WAREHOUSE_LOGIN_FILE):
        assert stat.S_IMODE((home / secret).stat().st_mode) == 0o600, secret
    exposed = [
        path
        for path in home.rglob("*")
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert not exposed, f"readable by others: {exposed[:10]}"


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    _up(tmp_path)
    try:
        (tmp_path / credentials.SIGNING_KEY_FILE).chmod(0o644)
        refused = run_cli(tmp_path, "forget", "--author", "ada")
        assert refused.returncode == 1
        assert "chmod 600" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        run_cli(tmp_path, "infra", "down")
