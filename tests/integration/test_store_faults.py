"""Store faults are clean answers: a command whose commit fails gets a 503 problem with
Retry-After and stores nothing; a consumer whose store is down pauses on the same record and
resumes it once the store is back, never dead-lettering a valid event.

SQLite faults are real: a disk that is full (an 8 MiB tmpfs mounted for the test, skipped
where mounting is not allowed) and a database locked by another connection past the busy
timeout. MongoDB faults go through the mongomock fake with a collection that raises the
driver's own errors (NotWritablePrimary on a step-down, AutoReconnect, a network timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import AutoReconnect, NetworkTimeout, NotPrimaryError, PyMongoError

import shared.kernel.eventstore.sqlite as sqlite_adapter
import shared.kernel.runtime as runtime_module
from operations.localbroker import LocalBroker
from shared.contracts.events import OrderShipped, default_registry
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.mongo import MongoEventStore
from shared.kernel.eventstore.port import EventStore, NewCommit
from shared.kernel.messaging.consumer import EventConsumer
from shared.kernel.readmodel.mongo import MongoDocumentStore
from shared.kernel.storage import open_event_store
from tests.integration.conftest import (
    Tokens,
    assert_problem,
    order_body,
    running_services,
    service_settings,
    uid,
)

pytestmark = [pytest.mark.broker, pytest.mark.asyncio(loop_scope="module")]

# --- the faults ----------------------------------------------------------------------------


class Fault:
    """Something that breaks a store while it is on and mends it when turned off."""

    name: str

    def on(self) -> None: ...

    def off(self) -> None: ...


class DiskFull(Fault):
    name = "sqlite-disk-full"

    def __init__(self, directory: Path) -> None:
        self.filler = directory / "filler"

    def on(self) -> None:
        with contextlib.suppress(OSError), self.filler.open("wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()

    def off(self) -> None:
        self.filler.unlink()


class Locked(Fault):
    """Another connection holds the write lock longer than the store's busy timeout."""

    name = "sqlite-locked"

    def __init__(self, database: Path) -> None:
        self.database = database
        self.holder: sqlite3.Connection | None = None

    def on(self) -> None:
        self.holder = sqlite3.connect(self.database, isolation_level=None)
        self.holder.execute("BEGIN EXCLUSIVE")

    def off(self) -> None:
        assert self.holder is not None
        self.holder.execute("ROLLBACK")
        self.holder.close()


class FlakyCollection:
    """A mongomock collection whose chosen methods raise a driver error while `failure` is set."""

    def __init__(self, collection: Any, methods: set[str]) -> None:
        self._collection = collection
        self._methods = methods
        self.failure: PyMongoError | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if name not in self._methods:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failure is not None:
                raise self.failure
            return attribute(*args, **kwargs)

        return call


class MongoDriverFault(Fault):
    def __init__(self, name: str, error: PyMongoError) -> None:
        self.name = name
        self.error = error
        self.collections: list[FlakyCollection] = []

    def wrap(self, store: MongoEventStore) -> MongoEventStore:
        # a step-down between the head read and the insert: the write itself is refused
        flaky = FlakyCollection(store._commits, {"insert_one", "update_one", "update_many"})
        store._commits = flaky
        self.collections.append(flaky)
        return store

    def on(self) -> None:
        for collection in self.collections:
            collection.failure = self.error

    def off(self) -> None:
        for collection in self.collections:
            collection.failure = None


MONGO_FAULTS = [
    ("mongo-fake-not-writable-primary", NotPrimaryError("not primary", {"code": 10107})),
    ("mongo-fake-auto-reconnect", AutoReconnect("connection reset by peer")),
    ("mongo-fake-network-timeout", NetworkTimeout("timed out")),
]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store waits for a busy lock this long before it gives up (5 s in service)."""
    monkeypatch.setattr(sqlite_adapter, "BUSY_TIMEOUT_S", 0.5)


@contextlib.contextmanager
def mongo_fake_stores(monkeypatch: pytest.MonkeyPatch, fault: MongoDriverFault) -> Iterator[None]:
    """Services open the MongoDB adapter over the mongomock fake instead of SQLite."""
    database = AsyncMongoMockClient()["yellowcart_faults"]

    async def event_store(url: str) -> EventStore:
        return fault.wrap(await MongoEventStore.open(database))

    async def document_store(url: str) -> Any:
        return MongoDocumentStore(database)

    monkeypatch.setattr(runtime_module, "open_event_store", event_store)
    monkeypatch.setattr(runtime_module, "open_document_store", document_store)
    yield


@contextlib.asynccontextmanager
async def order_edge(kafka: LocalBroker, data_dir: Path) -> AsyncIterator[Any]:
    settings = service_settings(kafka, data_dir)
    async with running_services(settings, ["order"], consumers=False) as services:
        yield services["order"]


async def count_commits(store: EventStore) -> int:
    return len([commit async for commit in store.read_all()])


async def command_gets_503_and_stores_nothing(
    order: Any, store: EventStore, tokens: Tokens, fault: Fault
) -> None:
    buyer, seller = uid("buyer"), uid("seller")
    first = await order.client.post("/orders", json=order_body(seller), headers=tokens.buyer(buyer))
    assert first.status_code == 201, first.text
    before = await count_commits(store)

    fault.on()
    try:
        refused = await order.client.post(
            "/orders", json=order_body(seller), headers=tokens.buyer(buyer)
        )
    finally:
        fault.off()

    problem = assert_problem(refused, 503)
    assert int(refused.headers["Retry-After"]) >= 1, problem
    assert await count_commits(store) == before, "a refused command stored something"
    again = await order.client.post("/orders", json=order_body(seller), headers=tokens.buyer(buyer))
    assert again.status_code == 201, again.text
    assert await count_commits(store) == before + 1


@pytest.mark.parametrize("fault_name", ["sqlite-disk-full", "sqlite-locked"])
async def test_a_command_whose_sqlite_commit_fails_gets_503_and_stores_nothing(
    fault_name: str,
    kafka: LocalBroker,
    tokens: Tokens,
    request: pytest.FixtureRequest,
    short_busy_timeout: None,
) -> None:
    data_dir: Path = request.getfixturevalue("tmpfs" if "disk" in fault_name else "tmp_path")
    fault: Fault = DiskFull(data_dir) if "disk" in fault_name else Locked(data_dir / "order.db")
    async with order_edge(kafka, data_dir) as order:
        store = await open_event_store(f"sqlite:///{data_dir}/order.db")
        try:
            await command_gets_503_and_stores_nothing(order, store, tokens, fault)
        finally:
            await store.close()


@pytest.mark.parametrize(("fault_name", "error"), MONGO_FAULTS, ids=[f[0] for f in MONGO_FAULTS])
async def test_a_command_whose_mongo_fake_commit_fails_gets_503_and_stores_nothing(
    fault_name: str,
    error: PyMongoError,
    kafka: LocalBroker,
    tokens: Tokens,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault = MongoDriverFault(fault_name, error)
    with mongo_fake_stores(monkeypatch, fault):
        async with order_edge(kafka, tmp_path) as order:
            store: EventStore = order.app.state.runtime.store
            await command_gets_503_and_stores_nothing(order, store, tokens, fault)


# --- the consumer side ---------------------------------------------------------------------


class NoDeadLetters:
    """The consumer's DLQ sender: anything sent to it fails the test."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, topic: str, value: bytes, **kwargs: Any) -> Any:
        self.sent.append(topic)
        raise AssertionError(f"a valid event was dead-lettered to {topic}")


def shipped_record(offset: int) -> tuple[ConsumerRecord[Any, Any], Envelope]:
    event = OrderShipped(order_id=f"o-{offset}", seller_id="s-1")
    envelope = Envelope.of(
        event,
        stream_id=f"order-o-{offset}",
        stream_version=2,
        occurred_at=datetime.now(UTC),
        producer="order",
        correlation_id=f"o-{offset}",
        causation_id=None,
    )
    value = envelope.model_dump_json().encode()
    record: ConsumerRecord[Any, Any] = ConsumerRecord(
        topic="order.events",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(("event_type", b"OrderShipped"),),
    )
    return record, envelope


def reaction(store: EventStore) -> Callable[[Envelope, DomainEvent], Any]:
    """A reaction that stores one commit per event it handles (keyed by the event's id)."""

    async def react(envelope: Envelope, event: DomainEvent) -> None:
        stream = f"reaction-{envelope.event_id}"
        await store.append(
            NewCommit(
                stream_id=stream,
                expected_version=0,
                events=[envelope.model_copy(update={"stream_id": stream, "stream_version": 1})],
                topic="reactions",
                partition_key=envelope.correlation_id,
                causation_id=envelope.event_id,
                handler="test.reaction",
            )
        )

    return react


async def consumer_pauses_and_resumes_the_same_record(store: EventStore, fault: Fault) -> None:
    dead_letters = NoDeadLetters()
    consumer = EventConsumer(
        topic="order.events",
        handler=reaction(store),
        registry=default_registry(),
        dead_letters=dead_letters,
    )
    record, envelope = shipped_record(41)
    committed: list[dict[TopicPartition, int]] = []

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        committed.append(offsets)

    fault.on()
    try:
        handling = asyncio.create_task(consumer.process_batch([record], commit))
        for _ in range(100):
            if consumer.metrics.store_unavailable >= 3:
                break
            await asyncio.sleep(0.05)
        assert consumer.metrics.store_unavailable >= 3, "the consumer did not retry the record"
        assert not handling.done() and committed == [], "the record was given up"
        assert consumer.waiting_for_store
    finally:
        fault.off()
    await asyncio.wait_for(handling, 10)

    assert committed == [{TopicPartition("order.events", 0): 42}]
    assert dead_letters.sent == [] and consumer.metrics.dead_lettered == 0
    assert consumer.metrics.processed == 1 and not consumer.waiting_for_store
    stored = await store.commit_by_causation(envelope.event_id, "test.reaction")
    assert stored is not None and await count_commits(store) == 1


@pytest.mark.parametrize("fault_name", ["sqlite-disk-full", "sqlite-locked"])
async def test_a_consumer_whose_sqlite_store_fails_pauses_and_resumes_the_same_record(
    fault_name: str, request: pytest.FixtureRequest, short_busy_timeout: None
) -> None:
    directory: Path = request.getfixturevalue("tmpfs" if "disk" in fault_name else "tmp_path")
    store = await open_event_store(f"sqlite:///{directory}/reactions.db")
    fault = DiskFull(directory) if "disk" in fault_name else Locked(directory / "reactions.db")
    try:
        await consumer_pauses_and_resumes_the_same_record(store, fault)
    finally:
        await store.close()


@pytest.mark.parametrize(("fault_name", "error"), MONGO_FAULTS, ids=[f[0] for f in MONGO_FAULTS])
async def test_a_consumer_whose_mongo_fake_store_fails_pauses_and_resumes_the_same_record(
    fault_name: str, error: PyMongoError
) -> None:
    fault = MongoDriverFault(fault_name, error)
    store = fault.wrap(await MongoEventStore.open(AsyncMongoMockClient()["yellowcart_faults"]))
    await consumer_pauses_and_resumes_the_same_record(store, fault)
