"""The project's own rules, checked in the test run: lint, format, types, import floors, pins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([str(BIN / "ruff"), "check", "."], id="ruff-check"),
        pytest.param([str(BIN / "ruff"), "format", "--check", "."], id="ruff-format"),
        pytest.param([str(BIN / "mypy"), "."], id="mypy"),
        # Floors (README's layout) and the SecantusDB licence boundary.
        pytest.param([str(BIN / "lint-imports")], id="import-contracts"),
        pytest.param([sys.executable, "-m", "pip", "check"], id="pip-check"),
    ],
)
def test_the_code_keeps_the_rules(command: list[str]) -> None:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_every_pin_in_pyproject_is_in_the_lock() -> None:
    """The lock is what gets installed; a pin changed only in pyproject would be ignored."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    locked = {
        line.strip().lower().replace("_", "-")
        for name in ("requirements.lock", "requirements-dev.lock")
        for line in (ROOT / name).read_text().splitlines()
        if "==" in line
    }
    missing = [pin for pin in wanted if pin.lower().replace("_", "-") not in locked]
    assert missing == []
