"""A SQLite store written before handlers were part of the de-duplication key opens, keeps its
commits and chain, and from then on keys new commits on (handler, cause)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.chain import verify_chain
from shared.kernel.eventstore.port import DuplicateCausation, NewCommit
from shared.kernel.eventstore.sqlite import SQLiteEventStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OLD_COMMITS = """
CREATE TABLE commits (
    position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, first_version INTEGER NOT NULL,
    last_version INTEGER NOT NULL, events TEXT NOT NULL, topic TEXT NOT NULL,
    partition_key TEXT NOT NULL, causation_id TEXT, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0,
    CHECK (last_version >= first_version AND first_version >= 1)
);
CREATE UNIQUE INDEX commits_stream_version ON commits (stream_id, first_version);
CREATE UNIQUE INDEX commits_causation ON commits (causation_id) WHERE causation_id IS NOT NULL;
"""


def commit(stream_id: str, version: int, cause: str, handler: str = "") -> NewCommit:
    event = Envelope(
        event_type="SellerOrderCounted",
        schema_version=1,
        stream_id=stream_id,
        stream_version=version,
        occurred_at=T0,
        producer="penalty",
        correlation_id="ord-1",
        data={"seller_id": "shop-1", "order_id": "ord-1", "placed_at": "2026-03-02T09:00:00Z"},
    )
    return NewCommit(
        stream_id=stream_id,
        expected_version=version - 1,
        events=[event],
        topic="penalty.events",
        partition_key="shop-1",
        causation_id=cause,
        handler=handler,
    )


async def test_an_old_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "penalty.db"
    store = await SQLiteEventStore.open(str(path))
    first = await store.append(commit("seller-shop-1", 1, "ev-1"))
    await store.close()
    # turn the file back into the old layout: no handler column, causation alone unique
    with sqlite3.connect(path) as old:
        old.executescript(
            "ALTER TABLE commits RENAME TO new_commits;"
            " DROP INDEX commits_stream_version; DROP INDEX commits_dedupe;"
            + OLD_COMMITS
            + "INSERT INTO commits SELECT position, stream_id, first_version, last_version,"
            " events, topic, partition_key, causation_id, prev_hash, hash, published"
            " FROM new_commits; DROP TABLE new_commits;"
        )

    store = await SQLiteEventStore.open(str(path))
    try:
        assert await store.commit_by_causation("ev-1") == first
        with pytest.raises(DuplicateCausation):
            await store.append(commit("seller-shop-1", 2, "ev-1"))
        second = await store.append(commit("seller-shop-1", 2, "ev-1", handler="tally"))
        assert await store.commit_by_causation("ev-1", "tally") == second
        assert verify_chain(await store.stream_commits("seller-shop-1")) == []
    finally:
        await store.close()


async def test_a_lease_table_from_before_fencing_gets_epochs_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, "
            "expires_at INTEGER NOT NULL)"
        )
        connection.execute("INSERT INTO leases VALUES ('timers', 'old-replica', 0)")
    connection.close()

    store = await SQLiteEventStore.open(str(path))
    try:
        fence = await store.try_lease("timers", "new-replica", timedelta(seconds=3), T0)
    finally:
        await store.close()

    assert fence is not None and (fence.owner, fence.epoch) == ("new-replica", 1)
