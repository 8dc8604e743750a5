"""Event store benchmark: our SQLite store against the eventsourcing library and raw sqlite3.

Run `python -m bench.store [--commits N]` (or `make bench-store`). All three write the same
generated events (4 per commit, realistic order payloads) to temporary files in one process,
then read everything back. See bench/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import orjson

from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.port import NewCommit
from shared.kernel.eventstore.sqlite import SQLiteEventStore, Synchronous

EVENTS_PER_COMMIT = 4
COMMITS_PER_STREAM = 5
APPEND_TARGET = 2.0  # ours / eventsourcing
READ_TARGET = 0.50  # ours / raw sqlite3 + orjson (the same rows fetched and their JSON parsed)
READ_REPEATS = 3
WRITERS = 16  # concurrent appenders in the concurrent rows
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EVENT_TYPES = ("OrderPlaced", "OrderPaymentConfirmed", "OrderShipped", "OrderCancelled")


@dataclass(frozen=True)
class Result:
    name: str
    append_events_per_s: float
    read_events_per_s: float


def generate(commits: int) -> list[NewCommit]:
    """Commits of 4 events over streams of 5 commits each, with order-sized payloads."""
    generated: list[NewCommit] = []
    for number in range(commits):
        order = number // COMMITS_PER_STREAM
        stream_id = f"order-{order:06d}"
        expected = (number % COMMITS_PER_STREAM) * EVENTS_PER_COMMIT
        events = [
            Envelope(
                event_type=EVENT_TYPES[offset],
                schema_version=1,
                stream_id=stream_id,
                stream_version=expected + offset + 1,
                occurred_at=START + timedelta(seconds=number, microseconds=offset * 137),
                producer="order",
                correlation_id=f"{order:06d}",
                causation_id=None,
                data={
                    "order_id": f"{order:06d}",
                    "buyer_id": f"buyer-{order % 977}",
                    "seller_id": f"seller-{order % 89}",
                    "items": [
                        {
                            "sku": f"SKU-{order % 311}-{line}",
                            "variant": "merah / XL",
                            "qty": 1 + line,
                            "unit_price": {"amount": 89_000 + 1_000 * line, "currency": "IDR"},
                        }
                        for line in range(2)
                    ],
                    "payment_method": "ovo",
                    "shipping_address": {
                        "line1": "Jl. Jend. Sudirman Kav. 52-53",
                        "city": "Jakarta Selatan",
                        "postcode": "12190",
                    },
                    "total": {"amount": 269_000, "currency": "IDR"},
                },
            )
            for offset in range(EVENTS_PER_COMMIT)
        ]
        generated.append(
            NewCommit(
                stream_id=stream_id,
                expected_version=expected,
                events=events,
                topic="order.events",
                partition_key=f"{order:06d}",
            )
        )
    return generated


def best_of(operation: Callable[[], int]) -> tuple[int, float]:
    """Reads change nothing, so each is timed READ_REPEATS times and the fastest kept."""
    return min((timed(operation) for _ in range(READ_REPEATS)), key=lambda result: result[1])


def timed(operation: Callable[[], int]) -> tuple[int, float]:
    gc.collect()
    began = time.perf_counter()
    count = operation()
    return count, time.perf_counter() - began


async def bench_ours(path: Path, commits: list[NewCommit], synchronous: Synchronous) -> Result:
    store = await SQLiteEventStore.open(str(path), synchronous=synchronous)
    try:
        gc.collect()
        began = time.perf_counter()
        for commit in commits:
            await store.append(commit)
        append_s = time.perf_counter() - began

        read_s = float("inf")
        for _ in range(READ_REPEATS):
            gc.collect()
            began = time.perf_counter()
            read = 0
            async for stored in store.read_all(batch_size=1000):
                read += len(stored.events)
            read_s = min(read_s, time.perf_counter() - began)
    finally:
        await store.close()
    total = len(commits) * EVENTS_PER_COMMIT
    assert read == total, (read, total)
    return Result(f"ours (synchronous={synchronous})", total / append_s, read / read_s)


async def bench_ours_concurrent(
    path: Path, commits: list[NewCommit], synchronous: Synchronous, writers: int
) -> float:
    """Append events/s with `writers` concurrent appenders (a service under load): each takes
    whole streams, in order, so only commits of different streams are in flight together."""
    streams: dict[str, list[NewCommit]] = {}
    for commit in commits:
        streams.setdefault(commit.stream_id, []).append(commit)
    shares: list[list[NewCommit]] = [[] for _ in range(writers)]
    for number, stream in enumerate(streams.values()):
        shares[number % writers].extend(stream)
    store = await SQLiteEventStore.open(str(path), synchronous=synchronous)
    try:

        async def write(share: list[NewCommit]) -> None:
            for commit in share:
                await store.append(commit)

        gc.collect()
        began = time.perf_counter()
        await asyncio.gather(*(write(share) for share in shares))
        append_s = time.perf_counter() - began
    finally:
        await store.close()
    return len(commits) * EVENTS_PER_COMMIT / append_s


def bench_eventsourcing_concurrent(
    path: Path,
    payloads: list[list[tuple[str, int, str, bytes]]],
    synchronous: Synchronous | None,
    writers: int,
) -> float:
    """The library's append with `writers` threads, each taking whole streams in order."""
    recorder, datastore, batches = _eventsourcing_recorder(path, payloads, synchronous)
    by_stream: dict[Any, list[Any]] = {}
    for batch in batches:
        by_stream.setdefault(batch[0].originator_id, []).append(batch)
    shares: list[list[Any]] = [[] for _ in range(writers)]
    for number, stream in enumerate(by_stream.values()):
        shares[number % writers].extend(stream)

    def write(share: list[Any]) -> None:
        for batch in share:
            recorder.insert_events(batch)

    gc.collect()
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(write, shares))
    append_s = time.perf_counter() - began
    datastore.close()
    return sum(len(batch) for batch in batches) / append_s


def _eventsourcing_recorder(
    path: Path,
    payloads: list[list[tuple[str, int, str, bytes]]],
    synchronous: Synchronous | None,
) -> tuple[Any, Any, list[list[Any]]]:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    datastore = SQLiteDatastore(db_name=str(path))
    if synchronous is not None:
        # The library has no setting for it: set it on every connection its pool opens.
        create_connection = datastore.pool._create_connection

        def create_with_synchronous() -> Any:
            connection = create_connection()
            connection._sqlite_conn.execute(f"PRAGMA synchronous = {synchronous}")
            return connection

        datastore.pool._create_connection = create_with_synchronous  # type: ignore[method-assign]
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    batches = [
        [
            StoredEvent(
                originator_id=uuid5(NAMESPACE_URL, stream_id),
                originator_version=version,
                topic=topic,
                state=state,
            )
            for stream_id, version, topic, state in commit
        ]
        for commit in payloads
    ]
    return recorder, datastore, batches


def bench_eventsourcing(
    path: Path,
    payloads: list[list[tuple[str, int, str, bytes]]],
    synchronous: Synchronous | None = None,
) -> Result:
    """The library as it ships (`synchronous` None: SQLite's default, FULL) or at a given level."""
    recorder, datastore, batches = _eventsourcing_recorder(path, payloads, synchronous)

    def append() -> int:
        for batch in batches:
            recorder.insert_events(batch)
        return sum(len(batch) for batch in batches)

    def read() -> int:
        count, start = 0, 1
        while True:
            notifications = recorder.select_notifications(start=start, limit=1000)
            if not notifications:
                return count
            count += len(notifications)
            start = notifications[-1].id + 1

    written, append_s = timed(append)
    read_count, read_s = best_of(read)
    datastore.close()
    assert read_count == written
    level = synchronous or "FULL, its default"
    return Result(f"eventsourcing (synchronous={level})", written / append_s, read_count / read_s)


def bench_raw(
    path: Path, payloads: list[list[tuple[str, int, str, bytes]]]
) -> tuple[Result, Result]:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, stream_id TEXT, version INTEGER, "
        "topic TEXT, payload BLOB)"
    )
    rows = [list(commit) for commit in payloads]

    def append() -> int:
        for commit in rows:
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO events (stream_id, version, topic, payload) VALUES (?, ?, ?, ?)",
                commit,
            )
            connection.execute("COMMIT")
        return sum(len(commit) for commit in rows)

    def read() -> int:
        return len(
            connection.execute(
                "SELECT id, stream_id, version, topic, payload FROM events"
            ).fetchall()
        )

    def read_parsed() -> int:
        rows = connection.execute("SELECT id, stream_id, version, topic, payload FROM events")
        return len([orjson.loads(payload) for *_, payload in rows.fetchall()])

    written, append_s = timed(append)
    read_count, read_s = best_of(read)
    parsed_count, parsed_s = best_of(read_parsed)
    connection.close()
    assert read_count == parsed_count == written
    return (
        Result("raw sqlite3 (executemany, SELECT *)", written / append_s, read_count / read_s),
        Result("raw sqlite3 + orjson (rows parsed)", written / append_s, parsed_count / parsed_s),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commits", type=int, default=5_000)
    args = parser.parse_args(argv)

    commits = generate(args.commits)
    payloads: list[list[tuple[str, int, str, bytes]]] = [
        [
            (e.stream_id, e.stream_version, e.event_type, json.dumps(e.wire()).encode())
            for e in commit.events
        ]
        for commit in commits
    ]
    # The generated input stays alive for the whole run; freezing it keeps the garbage
    # collector from rescanning it during every timed phase (an artifact of the harness, the
    # same for all three contenders).
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="yellowcart-bench-") as directory:
        folder = Path(directory)
        ours = asyncio.run(bench_ours(folder / "ours.db", commits, "NORMAL"))
        ours_full = asyncio.run(bench_ours(folder / "ours-full.db", commits, "FULL"))
        library = bench_eventsourcing(folder / "eventsourcing.db", payloads)
        library_normal = bench_eventsourcing(folder / "eventsourcing-normal.db", payloads, "NORMAL")
        raw, raw_parsed = bench_raw(folder / "raw.db", payloads)
        concurrent = {
            level: (
                asyncio.run(
                    bench_ours_concurrent(folder / f"ours-c-{level}.db", commits, level, WRITERS)
                ),
                bench_eventsourcing_concurrent(
                    folder / f"es-c-{level}.db", payloads, level, WRITERS
                ),
            )
            for level in ("NORMAL", "FULL")
        }

    events = len(commits) * EVENTS_PER_COMMIT
    print(
        f"{len(commits)} commits x {EVENTS_PER_COMMIT} events = {events} events, "
        f"payload ~{sum(len(p[3]) for c in payloads for p in c) // events} bytes/event\n"
    )
    print(f"{'store':<46} {'append ev/s':>12} {'read ev/s':>12}")
    for result in (ours, ours_full, library, library_normal, raw, raw_parsed):
        append_rate, read_rate = result.append_events_per_s, result.read_events_per_s
        print(f"{result.name:<46} {append_rate:>12,.0f} {read_rate:>12,.0f}")
    append_ratio = ours.append_events_per_s / library.append_events_per_s
    append_ratio_full = ours_full.append_events_per_s / library.append_events_per_s
    append_ratio_normal = ours.append_events_per_s / library_normal.append_events_per_s
    read_ratio = ours.read_events_per_s / raw_parsed.read_events_per_s
    read_ratio_unparsed = ours.read_events_per_s / raw.read_events_per_s
    print()
    print(_verdict("append ours / eventsourcing", append_ratio, APPEND_TARGET))
    print("equal settings (no target):")
    print(f"  {'append both FULL':<36} {append_ratio_full:6.2f}x")
    print(f"  {'append both NORMAL':<36} {append_ratio_normal:6.2f}x")
    print(f"{WRITERS} concurrent appenders, equal settings (target >= {APPEND_TARGET:.2f}x):")
    for level, (ours_rate, library_rate) in concurrent.items():
        verdict = _verdict(f"  append both {level}", ours_rate / library_rate, APPEND_TARGET)
        print(f"{verdict}   ours {ours_rate:,.0f} ev/s, eventsourcing {library_rate:,.0f} ev/s")
    print(_verdict("read ours / raw sqlite3 + orjson", read_ratio, READ_TARGET))
    print(f"  {'read ours / raw sqlite3 unparsed':<36} {read_ratio_unparsed:6.2f}x  (no target)")
    print(
        "\ntarget rows: ours at synchronous=NORMAL against eventsourcing at its default (FULL) "
        "and raw sqlite3 at NORMAL (rows fetched and their JSON parsed with orjson); all WAL"
    )


def _verdict(label: str, ratio: float, target: float) -> str:
    met = "met" if ratio >= target else "NOT met"
    return f"{label:<38} {ratio:6.2f}x  (target >= {target:.2f}x: {met})"


if __name__ == "__main__":
    main()
