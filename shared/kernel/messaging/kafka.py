"""Kafka clients built from settings at call time (never at import), and one send interface.

Every producer here waits for all in-sync replicas (`acks="all"`): aiokafka's default is
`acks=1`, which loses acknowledged records when a leader dies. The idempotent producer is a
setting (`kafka_idempotence`): on for real Kafka, off for the local Tansu broker, which does
not implement it. A send that times out means "maybe delivered": callers retry and consumers
deduplicate by event id / causation id.

Authentication is a setting too (`kafka_security_protocol`, SASL/SCRAM by default when it is
SASL_*): every client built here, producer or FastStream consumer, logs in as this service's
principal, so the broker's ACLs decide what each service may write and read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from shared.kernel.settings import Settings

Headers = Sequence[tuple[str, bytes]]


def client_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's connection keywords for `settings`' protocol and SASL principal."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    if not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        raise ValueError(
            f"YELLOWCART_KAFKA_SECURITY_PROTOCOL={protocol} needs YELLOWCART_KAFKA_SASL_USERNAME "
            "and YELLOWCART_KAFKA_SASL_PASSWORD (or YELLOWCART_KAFKA_SASL_PASSWORD_FILE)"
        )
    config: dict[str, Any] = {
        "security_protocol": protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password,
    }
    if protocol == "SASL_SSL":
        config["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    return config


def broker_security(settings: Settings) -> BaseSecurity | None:
    """The same login as `client_security`, in the form FastStream's `KafkaBroker` takes."""
    config = client_security(settings)
    if config["security_protocol"] == "PLAINTEXT":
        return None
    kinds: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    return kinds[config["sasl_mechanism"]](
        config["sasl_plain_username"],
        config["sasl_plain_password"],
        ssl_context=config.get("ssl_context"),
        use_ssl=config["security_protocol"] == "SASL_SSL",
    )


def producer_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer` (FastStream's `KafkaBroker` takes the same,
    with the login as `broker_security` instead)."""
    return {
        **client_security(settings),
        "bootstrap_servers": settings.broker_url,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        # a few milliseconds of lingering batches the relay's bursts without adding latency
        # a user would notice; requests time out well before a consumer group's session does
        "linger_ms": 5,
        "max_batch_size": 64 * 1024,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted aiokafka producer; the caller starts and stops it."""
    return AIOKafkaProducer(**{**producer_config(settings), **overrides})


def make_kafka_broker(
    settings: Settings, *, graceful_timeout_s: float = 10.0, **overrides: Any
) -> KafkaBroker:
    """A FastStream broker for subscribers and publishing, configured from `settings`.

    `graceful_timeout_s` is how long `broker.stop()` lets a running handler finish before
    cancelling it; a cancelled handler commits nothing (see `shared.kernel.messaging.consumer`).
    """
    config = producer_config(settings)
    servers = config.pop("bootstrap_servers")
    for connection_keyword in client_security(settings):
        config.pop(connection_keyword)
    return KafkaBroker(
        servers,
        graceful_timeout=graceful_timeout_s,
        security=broker_security(settings),
        **{**config, **overrides},
    )


@runtime_checkable
class RecordSender(Protocol):
    """Hands one record to a producer; the returned future resolves on the broker's ack."""

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]: ...


class AIOKafkaSender:
    """`RecordSender` over a started aiokafka producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.producer.send(
            topic, value=value, key=key, headers=list(headers)
        )
        return future


class FastStreamSender:
    """`RecordSender` over a connected FastStream `KafkaBroker` (its producer has acks=all)."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.broker.publish(
            value,
            topic,
            key=key,
            headers={name: raw.decode("utf-8", errors="replace") for name, raw in headers},
            no_confirm=True,
        )
        return future


def as_sender(target: RecordSender | AIOKafkaProducer | KafkaBroker) -> RecordSender:
    """Accept a producer, a FastStream broker or anything with the `RecordSender` shape."""
    if isinstance(target, AIOKafkaProducer):
        return AIOKafkaSender(target)
    if isinstance(target, KafkaBroker):
        return FastStreamSender(target)
    return target


async def send_and_wait(
    sender: RecordSender, topic: str, value: bytes, *, key: bytes | None, headers: Headers
) -> Any:
    """Send one record and wait for the broker's acknowledgement."""
    return await (await sender.send(topic, value, key=key, headers=headers))
