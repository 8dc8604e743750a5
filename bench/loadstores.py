"""Read the services' SQLite stores directly, read-only, while the system runs.

Two readers, both opened with `file:…?mode=ro` (WAL lets them read beside the writers):

* `CommitTail` follows a store's `commits` table by `position` (the store assigns positions
  inside its write transaction, so they grow in commit order) and keeps, for each wanted event
  type, the first `occurred_at` per `data.order_id`. Columns are selected by name.
* `ViewPoller` runs in a separate process so that its queries never stall the load client's
  event loop. The client hands it every order id it got a 201 for (`watch`); every
  `interval_s` it looks up the ids still pending in collection `order_views` (a point lookup
  per id, so a poll costs what is in flight, not what the view already holds) and records the
  wall-clock time of the first poll that saw each. A key first seen at poll time t became
  visible in (t - period, t]: the recorded lag is late by at most one period between polls
  (the mean period and poll duration are reported). An id is watched from its 201 on, a few
  milliseconds after OrderPlaced and well before its view can exist.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import orjson

VIEW_COLLECTION = "order_views"


def connect_ro(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
    )
    connection.execute("PRAGMA query_only = 1")
    return connection


def epoch(occurred_at: str) -> float:
    """RFC 3339 UTC (`…Z`) to seconds since the epoch."""
    return datetime.fromisoformat(occurred_at).timestamp()


@dataclass
class CommitTail:
    """First `occurred_at` (epoch s) per order id, for each of `event_types`, read incrementally."""

    path: Path
    event_types: tuple[str, ...]
    found: dict[str, dict[str, float]] = field(default_factory=dict)
    position: int = 0
    commits_read: int = 0
    _connection: sqlite3.Connection | None = None

    def __post_init__(self) -> None:
        self.found = {event_type: {} for event_type in self.event_types}

    def poll(self, batch: int = 5000) -> int:
        """Read every commit written since the last poll; returns how many were read."""
        if self._connection is None:
            self._connection = connect_ro(self.path)
        read = 0
        while True:
            rows = self._connection.execute(
                "SELECT position, events FROM commits WHERE position > ? ORDER BY position LIMIT ?",
                (self.position, batch),
            ).fetchall()
            for position, events in rows:
                for envelope in orjson.loads(events):
                    wanted = self.found.get(envelope["event_type"])
                    if wanted is None:
                        continue
                    order_id = envelope["data"].get("order_id")
                    if order_id is not None and order_id not in wanted:
                        wanted[order_id] = epoch(envelope["occurred_at"])
                self.position = position
            read += len(rows)
            if len(rows) < batch:
                break
        self.commits_read += read
        return read

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def views_present(path: Path, order_ids: Iterable[str]) -> set[str]:
    """Which of `order_ids` have an order view (a point lookup per key, in chunks)."""
    wanted = list(order_ids)
    present: set[str] = set()
    connection = connect_ro(path)
    try:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            present.update(
                key
                for (key,) in connection.execute(
                    f"SELECT key FROM documents WHERE collection = ? AND key IN ({marks})",
                    (VIEW_COLLECTION, *chunk),
                )
            )
    finally:
        connection.close()
    return present


@dataclass
class ViewPollResult:
    first_seen: dict[str, float]  # order id -> wall-clock epoch s of the first poll that saw it
    polls: int
    mean_poll_ms: float
    mean_period_ms: float  # wall time between poll starts: the lag's resolution
    max_poll_ms: float
    interval_s: float
    errors: int


def _poll_views(
    path: str,
    interval_s: float,
    stop: EventType,
    watched: multiprocessing.queues.SimpleQueue[str],
    out: multiprocessing.connection.Connection,
) -> None:
    """The poller process: poll until `stop` is set, then one last poll, then send the result."""
    first_seen: dict[str, float] = {}
    pending: set[str] = set()
    started = time.perf_counter()
    polls = errors = 0
    total = longest = 0.0
    connection: sqlite3.Connection | None = None
    query = (
        "SELECT key FROM documents WHERE collection = ? AND key IN (SELECT value FROM json_each(?))"
    )
    while True:
        last = stop.is_set()
        while not watched.empty():
            pending.add(watched.get())
        began_wall, began = time.time(), time.perf_counter()
        try:
            if connection is None:
                connection = connect_ro(Path(path))
            keys = connection.execute(query, (VIEW_COLLECTION, json.dumps(list(pending))))
            found = [key for (key,) in keys.fetchall()]
        except sqlite3.Error:
            errors += 1
            found = []
        for key in found:
            first_seen[key] = began_wall
        pending.difference_update(found)
        spent = time.perf_counter() - began
        polls += 1
        total += spent
        longest = max(longest, spent)
        if last:
            break
        # At most a tenth of a core: when the view lags, many ids are pending per poll.
        stop.wait(max(interval_s - spent, 9 * spent, 0.001))
    if connection is not None:
        connection.close()
    out.send(
        ViewPollResult(
            first_seen=first_seen,
            polls=polls,
            mean_poll_ms=1000 * total / max(polls, 1),
            mean_period_ms=1000 * (time.perf_counter() - started) / max(polls, 1),
            max_poll_ms=1000 * longest,
            interval_s=interval_s,
            errors=errors,
        )
    )
    out.close()


class ViewPoller:
    """Runs `_poll_views` in a spawned process; `stop()` returns what it saw."""

    def __init__(self, path: Path, interval_s: float = 0.025) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._watched: multiprocessing.queues.SimpleQueue[str] = context.SimpleQueue()
        self._receive, send = context.Pipe(duplex=False)
        self._process: Any = context.Process(
            target=_poll_views,
            args=(str(path), interval_s, self._stop, self._watched, send),
            name="view-poller",
            daemon=True,
        )
        self._process.start()
        send.close()

    def watch(self, order_id: str) -> None:
        """Time this order's view from now on (its 201 has arrived)."""
        self._watched.put(order_id)

    @property
    def pid(self) -> int:
        pid: int = self._process.pid
        return pid

    def stop(self, timeout_s: float = 30.0) -> ViewPollResult:
        self._stop.set()
        if not self._receive.poll(timeout_s):
            self._process.kill()
            raise RuntimeError("the view poller did not answer")
        result: ViewPollResult = self._receive.recv()
        self._process.join(5)
        return result
