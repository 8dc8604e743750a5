"""The SQLite append runs on the event loop's thread, so it must never hold the loop: a write
lock held elsewhere is waited for asynchronously, then given up on with StoreUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore import sqlite as sqlite_store
from shared.kernel.eventstore.port import ConcurrencyConflict, NewCommit, StoreUnavailable
from shared.kernel.eventstore.sqlite import SQLiteEventStore


def commit(stream: str = "order-1", version: int = 0) -> NewCommit:
    event = Envelope(
        event_type="OrderShipped",
        schema_version=1,
        stream_id=stream,
        stream_version=version + 1,
        occurred_at=datetime(2026, 11, 26, tzinfo=UTC),
        producer="order",
        correlation_id="o-1",
        data={"order_id": "o-1", "seller_id": "s-1"},
    )
    return NewCommit(stream, version, [event], "order.events", "o-1")


async def test_an_append_waits_for_a_held_write_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    store = await SQLiteEventStore.open(str(tmp_path / "events.db"))
    other = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process or connection is writing
        append = asyncio.create_task(store.append(commit()))
        ticks = 0
        for _ in range(20):  # the loop keeps running other work meanwhile
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20 and not append.done()
        other.execute("COMMIT")
        stored = await asyncio.wait_for(append, timeout=5)
        assert stored.first_version == 1
    finally:
        other.close()
        await store.close()


async def test_a_write_lock_held_too_long_makes_the_store_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    store = await SQLiteEventStore.open(str(tmp_path / "events.db"))
    other = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.append(commit())
        other.execute("ROLLBACK")
        assert (await store.append(commit())).first_version == 1  # and it recovers
    finally:
        other.close()
        await store.close()


async def test_a_stale_known_head_is_a_conflict_not_a_fork(tmp_path: Path) -> None:
    """Two stores on one file: the first's remembered head goes stale when the second
    appends; its next append must be refused, as if it had read the head."""
    first = await SQLiteEventStore.open(str(tmp_path / "events.db"))
    second = await SQLiteEventStore.open(str(tmp_path / "events.db"))
    try:
        await first.append(commit(version=0))
        await second.append(commit(version=1))
        with pytest.raises(ConcurrencyConflict):
            await first.append(commit(version=1))
        assert [e.stream_version for e in await first.load_stream("order-1")] == [1, 2]
        await first.append(commit(version=2))  # after reloading, the append goes through
    finally:
        await first.close()
        await second.close()


async def test_fenced_outbox_marks_keep_working_beside_appends_and_wal_checkpoints(
    tmp_path: Path,
) -> None:
    """The relay's fenced marks (a transaction on the writer's thread) interleaved with appends
    on the loop and the WAL checkpoints those appends trigger, as under load: every mark lands
    and no write lock is left behind. (A checkpoint whose statement stayed open made such a
    mark fail to commit and the relay fail every run after it.)"""
    from datetime import timedelta

    store = await SQLiteEventStore.open(str(tmp_path / "events.db"))
    try:
        fence = await store.try_lease("outbox", "relay", timedelta(seconds=30), datetime.now(UTC))
        assert fence is not None
        appends = sqlite_store.CHECKPOINT_EVERY_APPENDS * 6

        async def append_all() -> None:
            for index in range(appends):
                await store.append(commit(f"order-{index}"))
                if index % 8 == 0:
                    await asyncio.sleep(0)

        async def mark_all() -> int:
            marked = 0
            while marked < appends:
                pending = [c.position for c in await store.unpublished(64)]
                if pending:
                    await store.mark_published(pending, fence)
                    marked += len(pending)
                else:
                    await asyncio.sleep(0)
            return marked

        _, marked = await asyncio.wait_for(asyncio.gather(append_all(), mark_all()), 60)
        assert marked == appends
        assert await store.unpublished() == []
        assert await store.try_lease("outbox", "relay", timedelta(seconds=30), datetime.now(UTC))
    finally:
        await store.close()
