"""docker-compose.yml: valid Compose, and our deployables run real commands with real settings.

No Docker needed: the file is checked against the Compose Specification with ``compose_spec``,
each of our services' commands is run here with ``--help``, and every variable given to them
is matched against the settings the code actually reads.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyOptions
from pydantic import AliasChoices

from infra.kafka import WIRE_MAX_BYTES
from tests.support import ALL_SETTINGS

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
OUR_IMAGE = "llm-twin"

Service = dict[str, Any]


def _compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


def _validate(text: str) -> None:
    # apply_merge: Compose honours YAML merge keys (`<<: *llm-twin-environment`), which a later
    # deployable may use to extend the shared environment; without it compose_spec rejects them.
    PyOptions(apply_merge=True).from_yaml(text).validate()


def _services() -> dict[str, Service]:
    services = yaml.safe_load(_compose_text())["services"]
    assert isinstance(services, dict)
    return services


def _is_ours(service: Service) -> bool:
    image = str(service.get("image", ""))
    return "build" in service or image.split(":", 1)[0] == OUR_IMAGE


def _our_services() -> dict[str, Service]:
    return {name: service for name, service in _services().items() if _is_ours(service)}


def _command(service: Service) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _help_run(command: list[str]) -> subprocess.CompletedProcess[str]:
    assert command[0] == "llm-twin", f"{command}: our image runs the `llm-twin` command"
    return subprocess.run(
        [sys.executable, "-m", "llm_twin", *command[1:], "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _environment_names(service: Service) -> list[str]:
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return [str(name) for name in environment]
    return [str(entry).split("=", 1)[0] for entry in environment]


def _setting_names() -> set[str]:
    """Every environment variable our settings objects read, from their fields' aliases."""
    names: set[str] = set()
    for settings in ALL_SETTINGS:
        prefix = str(settings.model_config.get("env_prefix", ""))
        for field_name, field in settings.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias)
            elif isinstance(alias, AliasChoices):
                names.update(choice for choice in alias.choices if isinstance(choice, str))
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def _named_volumes(service: Service) -> list[str]:
    """The named volumes a service mounts (not bind mounts, not anonymous volumes)."""
    names = []
    for mount in service.get("volumes", []):
        if isinstance(mount, str):
            source = mount.split(":", 1)[0] if ":" in mount else ""
        else:
            source = mount.get("source", "") if mount.get("type") == "volume" else ""
        if source and not source.startswith(("/", ".", "~", "$")):
            names.append(source)
    return names


def test_the_file_is_valid_compose() -> None:
    text = _compose_text()
    _validate(text)
    assert "version" not in yaml.safe_load(text), "the Compose Specification has no `version:`"


@pytest.mark.parametrize(
    ("correct", "misspelt"),
    [
        ("\n    environment:", "\n    enviroment:"),
        ("condition: service_healthy", "condition: service_ready"),
        ("count: all", "count: every"),
    ],
)
def test_the_validator_rejects_a_misspelt_copy(correct: str, misspelt: str) -> None:
    text = _compose_text()
    broken = text.replace(correct, misspelt, 1)
    assert broken != text, f"{correct!r} is no longer in the file: pick another mutation"
    with pytest.raises(ValueError, match=misspelt.split()[-1].rstrip(":")):
        _validate(broken)


def test_init_is_one_of_our_services() -> None:
    ours = _our_services()
    assert "init" in ours
    assert _command(ours["init"]) == ["llm-twin", "infra", "up", "--json"]


@pytest.mark.parametrize("name", sorted(_our_services()))
def test_our_services_run_a_real_llm_twin_sub_command(name: str) -> None:
    service = _our_services()[name]
    assert "command" in service, f"{name}: say which sub-command it runs"
    result = _help_run(_command(service))
    assert result.returncode == 0, f"{name}: {_command(service)}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "command",
    [["llm-twin", "infra", "explode"], ["llm-twin", "infra", "up", "--jsn"], ["llm-twin", "nope"]],
)
def test_the_sub_command_check_fails_for_a_made_up_one(command: list[str]) -> None:
    assert _help_run(command).returncode != 0


def test_setting_names_come_from_the_settings_model() -> None:
    names = _setting_names()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", "QDRANT_URL", "LLM_TWIN_HOME"} <= names
    assert {"QDRANT_API_KEY", "LLM_TWIN_QDRANT_API_KEY", "TANSU_BIN"} <= names
    # An aliased field is read only under its alias: the prefixed name would be ignored.
    assert "LLM_TWIN_KAFKA_BOOTSTRAP_SERVERS" not in names
    assert "LLM_TWIN_KAFKA_URL" not in names


@pytest.mark.parametrize("name", sorted(_our_services()))
def test_our_services_are_given_only_real_settings(name: str) -> None:
    unknown = set(_environment_names(_our_services()[name])) - _setting_names()
    assert not unknown, f"{name}: no setting reads {sorted(unknown)}"


def test_the_broker_takes_the_largest_message_our_clients_send() -> None:
    kafka = _services()["kafka"]["environment"]
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) == WIRE_MAX_BYTES
    assert int(kafka["KAFKA_REPLICA_FETCH_MAX_BYTES"]) == WIRE_MAX_BYTES
    assert str(kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"


def test_the_volume_parser_finds_only_named_volumes() -> None:
    mounts = ["data:/data", "./config:/config:ro", "/srv:/srv", "/anonymous"]
    long_form = [{"type": "volume", "source": "more", "target": "/more"}]
    long_bind = [{"type": "bind", "source": "here", "target": "/here"}]
    assert _named_volumes({"volumes": [*mounts, *long_form, *long_bind]}) == ["data", "more"]


def test_every_named_volume_and_dependency_is_declared() -> None:
    # compose_spec's validate() checks networks and secrets, but neither of these.
    compose = yaml.safe_load(_compose_text())
    declared = set(compose.get("volumes") or {})
    services = compose["services"]
    for name, service in services.items():
        missing = set(_named_volumes(service)) - declared
        assert not missing, f"{name}: volumes {sorted(missing)} are not declared at the top level"
        unknown = set(service.get("depends_on") or []) - set(services)
        assert not unknown, f"{name}: depends on services {sorted(unknown)} that do not exist"


def test_tgi_starts_only_with_the_gpu_profile() -> None:
    services = _services()
    assert services["tgi"]["profiles"] == ["gpu"]
    devices = services["tgi"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    in_profiles = {name for name, service in services.items() if service.get("profiles")}
    assert in_profiles == {"tgi"}, "everything else starts with a plain `docker compose up`"
