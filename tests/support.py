"""Running ``llm-twin`` as a user would, in a home of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Variables that would point a test at some other stack.
EXTERNAL_SETTINGS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "MONGODB_URI",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    "TANSU_BIN",
    "LLM_TWIN_HOME",
    "LLM_TWIN_KAFKA_PORT",
    "LLM_TWIN_MONGODB_PORT",
)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_SETTINGS}
    return env | {"LLM_TWIN_HOME": str(home)} | extra


def run_cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``llm-twin ARGS`` with extra environment variables ``env``."""
    return feed_cli(home, b"", *args, **env)


def feed_cli(home: Path, data: bytes, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``llm-twin ARGS`` reading ``data`` on its standard input."""
    return subprocess.run(
        [sys.executable, "-m", "llm_twin", *args],
        env=cli_env(home, **env),
        input=data.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
