"""Faust's Kafka transport with a short fetch wait: the request path is latency-bound.

faust-streaming builds its aiokafka consumer with ``fetch_max_wait_ms=1500``
and no setting to change it. Tansu answers a long-polled fetch only when that
wait runs out (measured here), so a request would sit up to 1.5 s in the broker
before the consumer saw it. This transport sets the consumer's wait before
the consumer starts; everything else is Faust's own aiokafka driver.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from infra import kafka

# Every latency-sensitive consumer fetches with a wait of at most 10 ms.
FETCH_WAIT_MS = 5


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def faust_credentials(brokers: kafka.Brokers) -> Any:
    """The brokers' security settings as Faust's credentials (None: plaintext, no login)."""
    protocol = brokers.protocol or "PLAINTEXT"
    if protocol == "PLAINTEXT":
        return None
    context = (
        ssl.create_default_context(cafile=brokers.ssl_ca_file) if protocol.endswith("SSL") else None
    )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=brokers.sasl_username,
        password=brokers.sasl_password.get_secret_value() if brokers.sasl_password else None,
        ssl_context=context,
        mechanism=brokers.sasl_mechanism or "PLAIN",
    )


class LowLatencyApp(faust.App):
    """A Faust app whose consumer fetches with a short wait."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
