"""docker-compose.yml's Kafka security, exercised against a real broker configured exactly as
compose configures it (its environment, the JAAS file and passwords from secrets.sh, then
kafka-init.sh): each service's principal writes only its own topic (and checkpoint.events,
where it seals), reads what it consumes in its own groups, the `auditor` principal only reads
checkpoint.events (as `checkpoint-fetch` does, without a group), and a wrong password is
refused. Skips where no Docker daemon answers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from operations.sealed import read_latest_seals
from shared.contracts.events import CHECKPOINT_TOPIC
from shared.kernel.messaging.kafka import client_security, make_producer
from shared.kernel.settings import Settings
from tests.containers import NO_DOCKER, ROOT, compose_kafka, docker_answers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not docker_answers():
        pytest.skip(NO_DOCKER)
    secrets = tmp_path_factory.mktemp("secrets")
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "compose" / "secrets.sh"), str(secrets)], check=True
    )
    secrets.chmod(0o755)  # mounted as a directory here (compose mounts the files one by one)
    with compose_kafka(secrets) as bootstrap:
        yield bootstrap, secrets


def login(bootstrap: str, secrets: Path, service: str, password: str | None = None) -> Settings:
    file = secrets / f"kafka_{service.replace('-', '_')}_password"
    return Settings(
        broker_url=bootstrap,
        kafka_idempotence=True,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=service,
        kafka_sasl_password=password or file.read_text().strip(),
    )


async def produce(settings: Settings, topic: str) -> None:
    producer = make_producer(settings, request_timeout_ms=10_000)
    await producer.start()
    try:
        await (await producer.send(topic, b"{}", key=b"k"))
    finally:
        await producer.stop()


async def test_a_service_writes_its_own_topic_and_no_other(
    secured_kafka: tuple[str, Path],
) -> None:
    bootstrap, secrets = secured_kafka
    payment = login(bootstrap, secrets, "payment")
    await produce(payment, "payment.events")
    await produce(payment, "order.events.dlq")  # where its consumer parks poison records
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(payment, "order.events")


async def test_a_service_reads_what_it_consumes_in_its_own_groups_only(
    secured_kafka: tuple[str, Path],
) -> None:
    bootstrap, secrets = secured_kafka
    settings = login(bootstrap, secrets, "payment")

    async def poll(topic: str, group: str) -> None:
        consumer = AIOKafkaConsumer(
            topic,
            group_id=group,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            **client_security(settings),
        )
        await consumer.start()
        try:
            await consumer.getmany(timeout_ms=3000)
            await consumer.commit()
        finally:
            await consumer.stop()

    await poll("order.events", "payment.reactions")
    with pytest.raises(GroupAuthorizationFailedError):
        await poll("order.events", "order.view")
    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        await poll("dispute.events", "payment.reactions")


async def test_every_service_seals_to_the_checkpoint_topic_which_only_the_auditor_reads(
    secured_kafka: tuple[str, Path],
) -> None:
    bootstrap, secrets = secured_kafka
    for service in ("order", "payment", "seller-dispute", "penalty"):
        await produce(login(bootstrap, secrets, service), CHECKPOINT_TOPIC)
    auditor = login(bootstrap, secrets, "auditor")
    seals = await read_latest_seals(bootstrap, security=client_security(auditor))
    assert seals.records >= 4 and seals.malformed == seals.records  # "{}" is no seal
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(auditor, CHECKPOINT_TOPIC)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(auditor, "order.events")
    # a service may describe the topic (producing needs it) but never reads a seal from it
    try:
        unseen = await read_latest_seals(
            bootstrap, security=client_security(login(bootstrap, secrets, "payment"))
        )
    except (KafkaError, TimeoutError):
        pass  # refused: no Read on the topic
    else:
        assert unseen.records == 0


async def test_a_wrong_password_is_refused(secured_kafka: tuple[str, Path]) -> None:
    bootstrap, secrets = secured_kafka
    with pytest.raises(KafkaError):
        await produce(
            login(bootstrap, secrets, "order", password="not-the-password"), "order.events"
        )
