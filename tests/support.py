"""Running ``llm-twin`` as a user would, in a home of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition
from pydantic_settings import BaseSettings

from infra import kafka
from infra.settings import PlatformSettings
from llm.settings import LLMSettings
from producers.settings import CrawlSettings, ImportSettings
from schemas.topics import REGISTRY
from serving.settings import ServingSettings
from streams.settings import IngestSettings
from trainer.settings import JudgeSettings, TrainSettings

# Every settings object a deployable builds: README documents each of their variables,
# and docker-compose.yml may give our services only these.
ALL_SETTINGS: list[type[BaseSettings]] = [
    PlatformSettings,
    CrawlSettings,
    ImportSettings,
    IngestSettings,
    LLMSettings,
    ServingSettings,
    TrainSettings,
    JudgeSettings,
]

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
    "LLM_TWIN_SIGNING_KEY",
    "LLM_TWIN_KAFKA_SECURITY_PROTOCOL",
    "LLM_TWIN_KAFKA_SASL_MECHANISM",
    "LLM_TWIN_KAFKA_SASL_USERNAME",
    "LLM_TWIN_KAFKA_SASL_PASSWORD",
    "LLM_TWIN_KAFKA_SSL_CA_FILE",
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


def _consumer(bootstrap: str) -> Consumer:
    return kafka.make_consumer(bootstrap, f"test-{uuid.uuid4()}", latency_sensitive=True)


def topic_ends(bootstrap: str, name: str) -> dict[int, int]:
    """The next offset of every partition of a topic: where new messages will land."""
    consumer = _consumer(bootstrap)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)[1]
            for p in range(REGISTRY[name].partitions)
        }
    finally:
        consumer.close()


def read_topic(
    bootstrap: str, name: str, since: dict[int, int], count: int, *, settle_s: float = 0.0
) -> list[Message]:
    """Exactly ``count`` messages written since ``since``; waits ``settle_s`` for any extra."""
    consumer = _consumer(bootstrap)
    consumer.assign([TopicPartition(name, p, offset) for p, offset in since.items()])
    received: list[Message] = []
    deadline = time.monotonic() + 20
    try:
        while len(received) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                received.append(message)
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            message = consumer.poll(0.1)
            if message is not None:
                received.append(message)
    finally:
        consumer.close()
    assert len(received) == count, f"got {len(received)} of {count} messages from {name}"
    return received
