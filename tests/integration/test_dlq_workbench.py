"""The dead-letter workbench against the real local broker: a record one consumer group
rejected is listed with that group, redriven to that group only, handled there once, and the
other group, which had handled the original, never handles it twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import Result
from typer.testing import CliRunner

from operations.cli import EXIT_REFUSED, app
from operations.deadletters import LEDGER_TOPIC, read_topic
from operations.localbroker import LocalBroker, create_topics
from shared.contracts.events import default_registry
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.messaging import make_producer
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring
from shared.kernel.settings import Settings
from tests.conftest import eventually
from tests.integration.conftest import running_services, service_settings, uid
from tests.integration.test_event_consumer_broker import Consuming, shipped
from tests.integration.test_observability import scrape, values

pytestmark = pytest.mark.broker

runner = CliRunner()


async def cli(*arguments: str) -> Result:
    """The CLI as an operator runs it (its own event loop, so on a thread of its own here)."""
    return await asyncio.to_thread(runner.invoke, app, list(arguments))


@pytest.fixture
def settings(kafka: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("YELLOWCART_BROKER_URL", kafka.bootstrap_servers)
    return Settings(broker_url=kafka.bootstrap_servers, kafka_idempotence=False)


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()


async def test_a_letter_rejected_by_one_group_is_redriven_to_it_alone_and_handled_once(
    kafka: LocalBroker,
    settings: Settings,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    topic = unique_name("order.events")
    view_group, reactions_group = unique_name("order.view"), unique_name("payment.reactions")
    broken = {2, 4}
    handled_by_view: list[int] = []
    handled_by_reactions: list[int] = []

    async def view(envelope: Envelope, event: DomainEvent) -> None:
        if envelope.stream_version in broken:
            raise RuntimeError(f"view cannot fold v{envelope.stream_version}")
        handled_by_view.append(envelope.stream_version)

    async def reactions(envelope: Envelope, event: DomainEvent) -> None:
        handled_by_reactions.append(envelope.stream_version)

    for version in (1, 2, 3):
        await producer.send_and_wait(
            topic, shipped(version), key=b"o1", headers=[("event_type", b"OrderShipped")]
        )
    async with (
        Consuming(settings, topic, view_group, view) as view_consumer,
        Consuming(settings, topic, reactions_group, reactions) as reactions_consumer,
    ):
        await eventually(
            lambda: view_consumer.metrics.dead_lettered == 1 and len(handled_by_reactions) == 3,
            what="v2 dead-lettered by the view group, handled by the other",
        )
        listed = await cli("dlq", "list", "--topic", topic, "--json")
        assert listed.exit_code == 0, listed.output
        (letter,) = json.loads(listed.stdout)
        assert (letter["consumer_group"], letter["service"]) == (view_group, "order")
        assert (letter["event_type"], letter["error_type"]) == ("OrderShipped", "RuntimeError")
        assert letter["source_topic"] == topic and letter["state"] == "dead"
        filtered = await cli("dlq", "list", "--topic", topic, "--group", reactions_group, "--json")
        assert json.loads(filtered.stdout) == []

        ends_before = await end_offsets(kafka, topic)
        dry = await cli("dlq", "redrive", letter["id"], "--by", "auditor-7", "--dry-run")
        assert dry.exit_code == 0 and "dry run: would redrive" in dry.output
        assert await end_offsets(kafka, topic) == ends_before

        broken.discard(2)  # the view's bug is fixed
        redriven = await cli("dlq", "redrive", letter["id"], "--by", "auditor-7")
        assert redriven.exit_code == 0, redriven.output
        await eventually(lambda: 2 in handled_by_view, what="the view group handles v2")
        await eventually(
            lambda: reactions_consumer.metrics.redrives_skipped == 1,
            what="the other group skips the redriven record",
        )
        await asyncio.sleep(0.5)  # room for any second delivery to show up
        assert sorted(handled_by_view) == [1, 2, 3]
        assert sorted(handled_by_reactions) == [1, 2, 3]
        assert view_consumer.metrics.dead_lettered == 1

        again = await cli("dlq", "redrive", letter["id"])
        assert again.exit_code == EXIT_REFUSED and "already redriven" in again.output

        await producer.send_and_wait(topic, shipped(4), key=b"o1")
        await eventually(lambda: view_consumer.metrics.dead_lettered == 2, what="v4 dead-lettered")

    ledger = [json.loads(r.value) for r in await read_topic(kafka.bootstrap_servers, LEDGER_TOPIC)]
    (record,) = [entry for entry in ledger if entry["dead_letter"] == letter["id"]]
    assert (record["action"], record["by"], record["consumer_group"]) == (
        "redrive",
        "auditor-7",
        view_group,
    )
    assert record["to"].startswith(f"{topic}:")

    remaining = json.loads((await cli("dlq", "list", "--topic", topic, "--json")).stdout)
    (left,) = remaining  # v2 was redriven: only v4 is left
    shown = await cli("dlq", "show", left["id"])
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)
    assert detail["value"]["stream_version"] == 4
    assert detail["headers"]["consumer_group"] == view_group
    purge = await cli("dlq", "purge", "--topic", topic, "--group", view_group, "--by", "ops-2")
    assert purge.exit_code == 0 and "purge" in purge.output
    assert json.loads((await cli("dlq", "list", "--topic", topic, "--json")).stdout) == []
    everything = json.loads((await cli("dlq", "list", "--topic", topic, "--all", "--json")).stdout)
    assert sorted(entry["state"] for entry in everything) == ["purged", "redriven"]


async def test_redrive_without_ids_or_a_group_is_refused(settings: Settings) -> None:
    result = await cli("dlq", "redrive")
    assert result.exit_code == EXIT_REFUSED and "--group" in result.output


async def end_offsets(kafka: LocalBroker, topic: str) -> dict[Any, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def test_the_dead_letter_gauge_rises_per_poison_record_and_falls_on_redrive_and_purge(
    kafka: LocalBroker, settings: Settings, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    """A service's own /metrics, scraped as Prometheus would: `yellowcart_dead_letters_waiting`
    of its group on the topic's `.dlq`."""
    topic = uid("gauge.events")
    await create_topics(kafka.bootstrap_servers, [topic, f"{topic}.dlq"])
    poison = {"o-2", "o-3"}
    handled: list[str] = []

    async def fold(envelope: Envelope, event: DomainEvent) -> None:
        order_id = envelope.data["order_id"]
        if order_id in poison:
            raise RuntimeError(f"cannot fold {order_id}")
        handled.append(order_id)

    def wire(runtime: Runtime) -> Wiring:
        return Wiring(context=None, subscriptions=[Subscription((topic,), "fold", fold)])

    spec = ServiceSpec("dlqprobe", "dead-letter probe", [], default_registry, wire)
    async with running_services(service_settings(kafka, tmp_path), [spec]) as services:
        probe = services["dlqprobe"]

        async def waiting() -> list[float]:
            return values(
                await scrape(probe),
                "yellowcart_dead_letters_waiting",
                service="dlqprobe",
                topic=f"{topic}.dlq",
                group="dlqprobe.fold",
            )

        async def waiting_is(expected: list[float]) -> bool:
            return await waiting() == expected

        assert await waiting() == []  # no dead letter yet: no series
        for order_id in ("o-1", "o-2"):
            await producer.send_and_wait(topic, shipped(2, order_id), key=order_id.encode())
        await eventually(lambda: waiting_is([1.0]), what="the gauge shows the poison record")
        await producer.send_and_wait(topic, shipped(2, "o-3"), key=b"o-3")
        await eventually(lambda: waiting_is([2.0]), what="the gauge shows the second one")
        assert handled == ["o-1"]

        listed = json.loads((await cli("dlq", "list", "--topic", topic, "--json")).stdout)
        (o2,) = [letter for letter in listed if letter["key"] == "o-2"]
        poison.discard("o-2")  # the bug is fixed
        redriven = await cli("dlq", "redrive", o2["id"], "--by", "ops-1")
        assert redriven.exit_code == 0, redriven.output
        await eventually(lambda: "o-2" in handled, what="the redriven record is handled")
        await eventually(lambda: waiting_is([1.0]), what="the gauge falls after the redrive")

        purged = await cli("dlq", "purge", "--topic", topic, "--group", "dlqprobe.fold")
        assert purged.exit_code == 0, purged.output
        await eventually(lambda: waiting_is([0.0]), what="the gauge falls to 0 after the purge")
