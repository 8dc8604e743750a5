"""Services seal checkpoints of their own store onto checkpoint.events, outside the store.

Real parts: the local Tansu broker, the services' real SQLite stores, the real CLI. The
rewrite is the attacker's: one event edited and every later hash of its stream recomputed in a
copy of the store, so the chain is consistent again (`rewrite_and_rehash`)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from operations.checkpoint import generate_key, load_public_key, open_documents
from operations.cli import EXIT_CHECKPOINT, EXIT_OK, app
from operations.deadletters import read_topic
from operations.localbroker import LocalBroker, create_topics
from operations.sealed import read_latest_seals
from shared.contracts.events import CHECKPOINT_TOPIC, CheckpointSealed
from shared.kernel import sealing
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.port import EventStore
from shared.kernel.messaging import as_sender
from shared.kernel.sealing import CheckpointSealer
from shared.kernel.storage import open_event_store
from tests.conftest import eventually
from tests.integration.conftest import (
    Tokens,
    order_body,
    running_services,
    service_settings,
    uid,
)
from tests.integration.harness import T0
from tests.integration.test_checkpoints import paid_orders, rewrite_and_rehash

pytestmark = pytest.mark.asyncio(loop_scope="module")
runner = CliRunner()
SERVICES = ["order", "payment", "seller-dispute", "penalty"]


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "services.pem", tmp_path / "services.pub.pem"
    generate_key(private, public)
    return private, public


@pytest_asyncio.fixture(loop_scope="module")
async def producer(kafka: LocalBroker) -> AsyncIterator[AIOKafkaProducer]:
    await create_topics(kafka.bootstrap_servers, [CHECKPOINT_TOPIC])
    started = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def cli(kafka: LocalBroker, *args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        list(args),
        env={
            "YELLOWCART_BROKER_URL": kafka.bootstrap_servers,
            "YELLOWCART_STORE_URL": None,
            "YELLOWCART_STORE_URLS": None,
        },
    )
    return result.exit_code, result.output


async def seals_of(kafka: LocalBroker, service: str) -> list[CheckpointSealed]:
    """Every CheckpointSealed a (test-named) service published, in topic order."""
    events = []
    for record in await read_topic(kafka.bootstrap_servers, CHECKPOINT_TOPIC):
        event = CheckpointSealed.model_validate(Envelope.model_validate_json(record.value).data)
        if event.service == service:
            events.append(event)
    return events


def sealer(
    store: EventStore,
    producer: AIOKafkaProducer,
    clock: FakeClock,
    private: Path,
    service: str,
    owner: str,
    **options: Any,
) -> CheckpointSealer:
    from operations.checkpoint import load_private_key

    return CheckpointSealer(
        store,
        as_sender(producer),
        clock,
        load_private_key(private),
        service=service,
        owner=owner,
        event_of=CheckpointSealed.model_validate,
        interval=timedelta(seconds=60),
        **options,
    )


async def test_a_running_service_seals_its_store_the_seal_verifies_and_a_rehashed_rewrite_fails(
    kafka: LocalBroker,
    producer: AIOKafkaProducer,
    tmp_path: Path,
    key_pair: tuple[Path, Path],
    tokens: Tokens,
) -> None:
    private, public = key_pair
    data_dir = tmp_path / "var"
    settings = service_settings(
        kafka, data_dir, checkpoint_interval_s=0.3, checkpoint_key=private.read_text()
    )
    async with running_services(settings, SERVICES, consumers=False) as services:
        order = services["order"]
        placed = await order.client.post(
            "/orders", json=order_body(uid("shop")), headers=tokens.buyer(uid("buyer"))
        )
        assert placed.status_code == 201, placed.text
        stream = f"order-{placed.json()['order_id']}"

        async def sealed() -> bool:
            seals = await read_latest_seals(kafka.bootstrap_servers)
            return any(stream in d["stores"].get("order", {}) for d in seals.all_documents())

        await eventually(sealed, timeout_s=20, what="the order service sealed its new stream")
        sealer_metrics = order.app.state.runtime.sealer.metrics
        assert sealer_metrics.sealed >= 1 and sealer_metrics.refused_broken_chain == 0

    # the latest seal, straight from the topic, against the live stores
    code, output = await cli(
        kafka, "verify", "--against-topic", "--public-key", str(public), "--data-dir", str(data_dir)
    )
    assert code == EXIT_OK, output
    assert "extends the checkpoint" in output

    # the auditor keeps a copy; someone rewrites the order and rehashes its chain
    saved = tmp_path / "sealed.json"
    code, output = await cli(
        kafka, "checkpoint-fetch", "--out", str(saved), "--public-key", str(public)
    )
    assert code == EXIT_OK, output
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    version = rewrite_and_rehash(copy / "order.db", stream, '"quantity":2', '"quantity":1')

    code, output = await cli(kafka, "verify", "--data-dir", str(copy))
    assert code == EXIT_OK, output  # the chain alone is consistent again
    code, output = await cli(
        kafka,
        "verify",
        "--against",
        str(saved),
        "--public-key",
        str(public),
        "--json",
        "--data-dir",
        str(copy),
    )
    assert code == EXIT_CHECKPOINT, output
    assert f'"stream_id": "{stream}"' in output and f'"version": {version}' in output
    assert '"kind": "rewritten"' in output


async def test_the_tools_read_the_topic_with_the_configured_login_never_without_it(
    kafka: LocalBroker, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    """A deployment whose broker asks for SASL (compose: the `auditor` principal) gives the
    tools a login; told to log in without a principal, they refuse with what to set instead of
    reading the topic anonymously (the local broker here would have let them)."""
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["checkpoint-fetch", "--out", str(tmp_path / "sealed.json")],
        env={
            "YELLOWCART_BROKER_URL": kafka.bootstrap_servers,
            "YELLOWCART_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "YELLOWCART_KAFKA_SASL_USERNAME": None,
            "YELLOWCART_KAFKA_SASL_PASSWORD": None,
        },
    )
    assert result.exit_code == EXIT_CHECKPOINT, result.output
    assert "YELLOWCART_KAFKA_SASL_USERNAME" in " ".join(result.output.split())
    assert not (tmp_path / "sealed.json").exists()


async def test_only_the_lease_holder_seals_and_an_unchanged_store_is_not_sealed_again(
    kafka: LocalBroker, producer: AIOKafkaProducer, tmp_path: Path, key_pair: tuple[Path, Path]
) -> None:
    private, public = key_pair
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    await paid_orders(data_dir, 2)
    url = f"sqlite:///{data_dir}/order.db"
    first, second = await open_event_store(url), await open_event_store(url)  # two replicas
    service, clock = uid("order"), FakeClock(T0)
    try:
        replica_a = sealer(first, producer, clock, private, service, "order@a")
        replica_b = sealer(second, producer, clock, private, service, "order@b")
        sealed = await replica_a.run_once()
        assert sealed is not None and sealed.streams == 2
        assert await replica_b.run_once() is None
        assert replica_b.metrics.runs_without_lease == 1
        clock.advance(timedelta(seconds=60))
        assert await replica_a.run_once() is None  # nothing new: no second seal
        assert await replica_b.run_once() is None
        assert replica_a.metrics.unchanged == 1 and replica_a.metrics.sealed == 1
        assert len(await seals_of(kafka, service)) == 1

        # replica a dies holding the lease; once it expires b takes over and seals
        clock.advance(timedelta(seconds=126))
        taken = await replica_b.run_once()
        assert taken is not None and taken.position == sealed.position
        published = await seals_of(kafka, service)
        assert [event.seal_id for event in published] == [sealed.seal_id, taken.seal_id]
        checkpoint = open_documents(
            [event.document() for event in published], load_public_key(public), "the topic"
        )
        assert checkpoint.key_pinned
        assert set(checkpoint.heads[service]) == {
            s.stream_id for s in [c async for c in first.read_all()]
        }
    finally:
        await first.close()
        await second.close()


async def test_a_large_store_is_sealed_in_parts_and_an_incomplete_seal_is_not_used(
    kafka: LocalBroker, producer: AIOKafkaProducer, tmp_path: Path, key_pair: tuple[Path, Path]
) -> None:
    from operations.sealed import latest_seals

    private, _ = key_pair
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    await paid_orders(data_dir, 3)
    store = await open_event_store(f"sqlite:///{data_dir}/order.db")
    service = uid("order")
    try:
        parts = sealer(store, producer, FakeClock(T0), private, service, "order@a", part_streams=2)
        sealed = await parts.run_once()
        assert sealed is not None and (sealed.streams, sealed.parts) == (3, 2)
    finally:
        await store.close()
    published = await seals_of(kafka, service)
    assert [(e.part, e.parts) for e in published] == [(1, 2), (2, 2)]
    whole = latest_seals(published)
    assert sum(len(d["stores"][service]) for d in whole.documents[service]) == 3
    assert whole.incomplete == 0
    missing_a_part = latest_seals(published[:1])
    assert service not in missing_a_part.documents and missing_a_part.incomplete == 1


async def test_a_broken_chain_is_never_sealed(
    kafka: LocalBroker, producer: AIOKafkaProducer, tmp_path: Path, key_pair: tuple[Path, Path]
) -> None:
    private, _ = key_pair
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    await paid_orders(data_dir, 1)
    with sqlite3.connect(data_dir / "order.db") as db:  # edited in place, hashes left alone
        db.execute(
            "UPDATE commits SET events = replace(events, '\"quantity\":2', '\"quantity\":9')"
        )
    store = await open_event_store(f"sqlite:///{data_dir}/order.db")
    service = uid("order")
    try:
        refusing = sealer(store, producer, FakeClock(T0), private, service, "order@a")
        assert await refusing.run_once() is None
        assert refusing.metrics.refused_broken_chain == 1 and refusing.metrics.sealed == 0
    finally:
        await store.close()
    assert await seals_of(kafka, service) == []


async def test_a_round_works_in_steps_and_rests_to_keep_within_its_share_of_a_core(
    kafka: LocalBroker,
    producer: AIOKafkaProducer,
    tmp_path: Path,
    key_pair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each step of work (here 10 ms by a stepped clock) is followed by a rest three times as
    long at a pace of a quarter of a core: after every `read_batch` commits read and checked,
    and after every part published."""
    private, _ = key_pair
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    await paid_orders(data_dir, 3)
    ticks = iter(range(1_000_000))
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(round(seconds, 6))

    monkeypatch.setattr(sealing, "_work_clock", lambda: next(ticks) * 0.01)
    monkeypatch.setattr(sealing, "_sleep", rest)
    store = await open_event_store(f"sqlite:///{data_dir}/order.db")
    try:
        commits = len([c async for c in store.read_all()])
        paced = sealer(
            store,
            producer,
            FakeClock(T0),
            private,
            uid("order"),
            "order@a",
            read_batch=2,
            part_streams=2,
            pace=0.25,
        )
        sealed = await paced.run_once()
    finally:
        await store.close()
    assert sealed is not None and sealed.parts == 2
    assert rests == [0.03] * (commits // 2 + sealed.parts)


async def test_a_pace_outside_a_core_is_refused(key_pair: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="share of a core"):
        sealer(None, None, FakeClock(T0), key_pair[0], "order", "order@a", pace=0)  # type: ignore[arg-type]
