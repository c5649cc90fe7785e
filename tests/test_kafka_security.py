"""Every Kafka client the platform makes gets the deployment's security settings.

The embedded broker (Tansu 0.6) cannot check them: with ``--authentication`` it
offers our clients no SASL mechanism they share, and with ``--cert`` its listener
still speaks plaintext. So each client is pointed at a loopback listener that
records the first bytes it is sent: with ``security.protocol=SSL`` they must be a
TLS handshake, never a plaintext Kafka request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from pydantic import SecretStr

from infra import kafka
from infra.settings import PlatformSettings
from schemas.topics import RAW_DOCUMENTS

TLS_HANDSHAKE = 0x16  # a TLS record of type handshake: the ClientHello


class FirstBytes:
    """A loopback listener that keeps the first byte of every connection made to it."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self.first: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    data = connection.recv(1)
                except OSError:
                    continue
                if data:
                    self.first.append(data[0])

    def wait(self, timeout_s: float = 10) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while not self.first and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.first)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


@pytest.fixture
def listener() -> Iterator[FirstBytes]:
    first = FirstBytes()
    try:
        yield first
    finally:
        first.close()


def _tls(address: str, tmp_path: Path) -> kafka.Brokers:
    settings = PlatformSettings(home=tmp_path, kafka_security_protocol="SSL")
    return kafka.Brokers.of(address, settings)


def _admin(brokers: kafka.Brokers) -> Any:
    admin = kafka.make_admin(brokers)
    admin.poll(1)
    return admin


def _producer(brokers: kafka.Brokers) -> Any:
    producer = kafka.make_producer(brokers)
    producer.poll(1)
    return producer


def _consumer(brokers: kafka.Brokers) -> Any:
    consumer = kafka.make_consumer(brokers, "security-test", latency_sensitive=True)
    consumer.poll(1)
    return consumer


def _assigned(brokers: kafka.Brokers) -> Any:
    consumer = kafka.make_assigned_consumer(brokers, "security-test", "g", fetch_wait_ms=5)
    consumer.poll(1)
    return consumer


def _bytewax_source(brokers: kafka.Brokers) -> Any:
    from streams.run import RawDocumentsSource

    source = RawDocumentsSource(brokers, tail=True, fetch_wait_ms=5)
    return source.build_part("source", f"0-{RAW_DOCUMENTS.name}", None)


@pytest.mark.parametrize(
    "make",
    [_admin, _producer, _consumer, _assigned, _bytewax_source],
    ids=["admin", "producer", "consumer", "assigned-consumer", "bytewax-source"],
)
def test_each_client_speaks_tls_when_the_settings_say_so(
    make: Callable[[kafka.Brokers], Any], listener: FirstBytes, tmp_path: Path
) -> None:
    client = make(_tls(listener.address, tmp_path))
    try:
        first = listener.wait()
    finally:
        del client
    assert first, "the client never connected"
    assert set(first) == {TLS_HANDSHAKE}, f"plaintext bytes {first} sent to a TLS broker"


def test_without_settings_the_same_client_speaks_plaintext(listener: FirstBytes) -> None:
    client = _producer(kafka.Brokers(listener.address))
    try:
        first = listener.wait()
    finally:
        del client
    assert first and TLS_HANDSHAKE not in first


def _sasl(home: Path, protocol: str, mechanism: str, **more: Any) -> PlatformSettings:
    """Settings as the environment would give them: user ``twin``, password ``hunter2-hunter2``."""
    return PlatformSettings(
        home=home,
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="twin",
        kafka_sasl_password=SecretStr("hunter2-hunter2"),
        **more,
    )


def test_sasl_settings_reach_librdkafka_and_faust_and_stay_out_of_reprs(tmp_path: Path) -> None:
    import faust

    from serving.faust_kafka import faust_credentials

    settings = _sasl(
        tmp_path,
        "SASL_SSL",
        "SCRAM-SHA-256",
        kafka_ssl_ca_file=Path(certifi.where()),  # any real PEM bundle
    )
    brokers = kafka.Brokers.of("kafka:9093", settings)
    for config in (
        kafka.producer_config(brokers),
        kafka.consumer_config(brokers, "g", latency_sensitive=False),
    ):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-256"
        assert config["sasl.username"] == "twin"
        assert config["sasl.password"] == "hunter2-hunter2"
        assert config["ssl.ca.location"] == certifi.where()
    assert "hunter2" not in repr(brokers)
    credentials = faust_credentials(brokers)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "twin" and credentials.password == "hunter2-hunter2"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.protocol.value == "SASL_SSL" and credentials.ssl_context is not None
    assert "hunter2" not in repr(credentials)
    assert faust_credentials(kafka.Brokers("kafka:9092")) is None


def test_the_serving_faust_app_is_given_the_credentials(tmp_path: Path) -> None:
    import faust

    from serving.consumer import RetrievalConsumer

    settings = _sasl(tmp_path, "SASL_PLAINTEXT", "PLAIN")
    consumer = RetrievalConsumer(
        kafka.Brokers.of("kafka:9092", settings),
        answerer=None,  # type: ignore[arg-type]  # never started: only its configuration is read
        db=None,  # type: ignore[arg-type]
        datadir=tmp_path / "faust",
    )
    credentials = consumer.app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "twin" and credentials.password == "hunter2-hunter2"
    assert credentials.protocol.value == "SASL_PLAINTEXT"
