"""Backlog-drain benchmark: `python -m bench.drain [--n 50000]`.

How fast does the system work off a backlog of orders that piled up while its consumers were
down, compared with what the broker and a bare Kafka client can do on the same machine, in the
same run?

1. **Broker.** A local Tansu broker (`operations.localbroker.LocalBroker`, memory storage) with
   the four event topics and their `.dlq` twins, 4 partitions each.
2. **Backlog.** N `OrderPlaced` envelopes, built with the real contracts (`OrderPlaced`,
   `Envelope.of`), keyed by order id and with the headers the outbox relay sets, are produced
   to `order.events` with aiokafka (`acks="all"`, `linger_ms=5`, 64 KiB batches; sends not
   awaited one by one, then a flush). No service runs yet. These orders are in no order store:
   the order view is built from the topic alone, which is all its consumer needs.
3. **Raw baselines**, on the same broker, before any service starts:
   * *consume + decode*: one `AIOKafkaConsumer` without a group, assigned every partition of
     `order.events` from the beginning, `getmany` until N records, each value decoded with
     `Envelope.model_validate_json`. Timed from the first `getmany` to the N-th decode.
   * *round trip*: the same N keys, values and headers produced to a fresh topic while a
     consumer (no group, assigned and positioned before the first send) reads them back,
     undecoded. Timed from the first send to the arrival of the N-th record.
   Both raw consumers use a 100 ms fetch wait, like the services (`consumer_fetch_wait_ms`).
4. **Drain.** `python -m operations serve payment` and `... serve order` start as subprocesses
   with a fresh data directory (`YELLOWCART_ENVIRONMENT=embedded`, idempotence off for Tansu).
   The clock starts when they are launched, so the time includes their start (imports, HTTP
   edge, consumer-group joins; the time to `GET /health` = 200 is reported too). Every 0.5 s
   (`--poll-interval`) read-only SQLite connections count:
   * `intents`: commits in `payment.db` (one per payment intent, each holding PaymentRequested);
   * `published`: those of them the outbox relay has published to `payment.events`;
   * `views`: documents in `order.db` collection `order_views` (one per OrderPlaced folded);
   * `views awaiting payment`: views whose `payment.status` is `awaiting_payment`
     (json_extract), i.e. the order view consumer has folded that order's PaymentRequested.
     Parsing every view on every poll would cost the poller a third of a core at N = 50,000,
     taken from the services it measures, so a view once counted is remembered and not parsed
     again (`ViewCounter`), and while some PaymentRequested are still unpublished (so this
     stage cannot be complete) the scan runs every 4th poll only. A full json_extract count at
     the end checks the result.
   A stage's time is the first poll (its start) at which its count reached N, so times are
   late by up to one poll period; its rate is N / time. The steady rate between 10 % and 90 % of
   N is reported too: it leaves the start-up out. At the end the PaymentRequested events in
   `payment.db` are counted exactly (JSON of every commit) and checked against N. Every poll is
   kept in the JSON (`drain.samples`: counts and cumulative CPU seconds per process), which
   shows which stage holds the others back.
5. **Resources.** CPU seconds (utime + stime from `/proc/<pid>/stat`) of the two services and
   the broker over the drain, the benchmark's own (the poller), and peak RSS (`VmHWM`, lifetime
   peak: the broker's includes the preload and the baselines, as it keeps every record in
   memory).
6. Ratios: drain rate of the last stages (every view exists; every PaymentRequested folded into
   its view) over the raw round-trip rate and over the raw consume + decode rate. The target
   is a drain of at least 25 % of the raw round trip. Results go to
   `bench/results/drain-<UTC>.json` and `bench/results/drain-latest.json`.

One run, one machine: rates move between runs (other work on the same cores above all), so
compare ratios taken from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from operations.localbroker import LocalBroker, free_port
from operations.supervisor import die_with_parent
from shared.contracts.events import (
    ORDER_TOPIC,
    TOPICS,
    LineItem,
    OrderPlaced,
    PaymentMethod,
    ShippingAddress,
)
from shared.kernel.events.envelope import Envelope

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTITIONS = 4
DLQ_SUFFIX = ".dlq"
ROUNDTRIP_TOPIC = "bench.drain.roundtrip"
SERVICES = ("payment", "order")
POLL_INTERVAL_S = 0.5
AWAITING_SCAN_EVERY = 4  # polls, while some PaymentRequested are not published yet
FETCH_WAIT_MS = 100  # the services' default consumer_fetch_wait_ms
TARGET_RATIO = 0.25  # drain rate / raw round-trip rate
STAGES = ("intents", "published", "views", "views_awaiting_payment")
STAGE_LABELS = {
    "intents": "(a) every payment intent stored",
    "published": "    every PaymentRequested published",
    "views": "(c) every order view exists",
    "views_awaiting_payment": "(b) every PaymentRequested in its view",
}

Header = tuple[str, bytes]
Record = tuple[bytes, bytes, list[Header]]  # key, value, headers


# --- the backlog ------------------------------------------------------------------------------


def build_backlog(n: int) -> list[Record]:
    """N valid OrderPlaced envelopes as the order service's outbox relay would publish them."""
    items = (LineItem(sku="KAOS-01", variant="kuning/L", quantity=2, unit_price=75000),)
    address = ShippingAddress(
        recipient="Siti Rahma",
        phone="081234567890",
        street="Jl. Melati No. 5",
        city="Bandung",
        province="Jawa Barat",
        postal_code="40115",
    )
    records: list[Record] = []
    for i in range(n):
        oid = str(uuid.uuid4())
        event = OrderPlaced(
            order_id=oid,
            buyer_id="buyer-1",
            seller_id=f"shop-{i % 200}",
            items=items,
            shipping_address=address,
            payment_method=PaymentMethod.BANK_TRANSFER,
            total_amount=150000,
        )
        env = Envelope.of(
            event,
            stream_id=f"order-{oid}",
            stream_version=1,
            occurred_at=datetime.now(UTC),
            producer="order",
            correlation_id=oid,
            causation_id=None,
        )
        headers = [
            ("event_type", b"OrderPlaced"),
            ("event_id", env.event_id.encode()),
            ("content-type", b"application/json"),
        ]
        records.append((oid.encode(), env.model_dump_json().encode(), headers))
    return records


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=64 * 1024
    )


def new_consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )


async def produce_all(producer: AIOKafkaProducer, topic: str, records: list[Record]) -> None:
    """Send every record without awaiting each acknowledgement, flush, then check them all."""
    pending: list[asyncio.Future[Any]] = []
    for key, value, headers in records:
        pending.append(await producer.send(topic, value=value, key=key, headers=headers))
    await producer.flush()
    await asyncio.gather(*pending)


async def preload(bootstrap: str, records: list[Record]) -> float:
    """Produce the backlog to order.events; return the seconds it took (producer warm)."""
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        await produce_all(producer, ORDER_TOPIC, records)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def assign_all(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` to a group-less consumer, from the beginning."""
    partitions = consumer.partitions_for_topic(topic)
    deadline = time.monotonic() + 10.0
    while not partitions:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no metadata for topic {topic}")
        await consumer.topics()  # refreshes the metadata
        partitions = consumer.partitions_for_topic(topic)
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    for tp in assigned:  # resolve the offsets now, not inside the timed part
        await consumer.position(tp)
    return assigned


# --- raw baselines ----------------------------------------------------------------------------


async def raw_consume_decode(bootstrap: str, n: int) -> dict[str, Any]:
    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        await assign_all(consumer, ORDER_TOPIC)
        received = 0
        started = time.perf_counter()
        while received < n:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    Envelope.model_validate_json(record.value)
                received += len(records)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"records": received, "seconds": elapsed, "rate": received / elapsed}


async def raw_round_trip(bootstrap: str, records: list[Record]) -> dict[str, Any]:
    n = len(records)
    consumer = new_consumer(bootstrap)
    producer = new_producer(bootstrap)
    await consumer.start()
    await producer.start()
    try:
        await assign_all(consumer, ROUNDTRIP_TOPIC)

        async def receive() -> float:
            received = 0
            while received < n:
                batches = await consumer.getmany(timeout_ms=1000)
                received += sum(len(batch) for batch in batches.values())
            return time.perf_counter()

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(0.2)  # the receiver's first fetch is in flight
        started = time.perf_counter()
        await produce_all(producer, ROUNDTRIP_TOPIC, records)
        produced = time.perf_counter()
        last_received = await asyncio.wait_for(receiver, timeout=max(60.0, n / 100))
    finally:
        await producer.stop()
        await consumer.stop()
    elapsed = last_received - started
    return {
        "records": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "produce_acked_seconds": produced - started,
    }


async def prepare(
    bootstrap: str,
    records: list[Record],
    create: Callable[[Iterable[str]], Awaitable[None]],
) -> dict[str, Any]:
    """Topics, preload, then both baselines (the broker is already running)."""
    await create([*TOPICS, *(t + DLQ_SUFFIX for t in TOPICS), ROUNDTRIP_TOPIC])
    preload_s = await preload(bootstrap, records)
    consume = await raw_consume_decode(bootstrap, len(records))
    round_trip = await raw_round_trip(bootstrap, records)
    return {
        "preload": {"seconds": preload_s, "rate": len(records) / preload_s},
        "consume_decode": consume,
        "round_trip": round_trip,
    }


# --- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process, in seconds."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on
    return round((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, 2)


def memory_kib(pid: int | None, key: str) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --- the services -----------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    healthy_s: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def health(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/health"
            with urllib.request.urlopen(url, timeout=0.3) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, max_bytes: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def launch(name: str, bootstrap: str, data_dir: Path) -> Service:
    """`python -m operations serve <name>` on a free port. Call it from the main thread: the
    child's parent-death signal fires when the thread that forked it ends."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        YELLOWCART_BROKER_URL=bootstrap,
        YELLOWCART_KAFKA_IDEMPOTENCE="false",
        YELLOWCART_DATA_DIR=str(data_dir),
        YELLOWCART_ENVIRONMENT="embedded",
        YELLOWCART_INSTANCE_ID=f"drain-{name}",
    )
    log_path = data_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "operations", "serve", name, "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C reaches only us; we stop them in order
        preexec_fn=die_with_parent,
    )
    return Service(name, port, process, log_path, log)


def read_only(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None


def count_payment(path: Path) -> tuple[int, int] | None:
    """(commits, published commits) in payment.db, or None when it cannot be read yet."""
    connection = read_only(path)
    if connection is None:
        return None
    try:  # one statement, so one snapshot: both counts are of the same moment
        commits, unpublished = connection.execute(
            "SELECT (SELECT COUNT(*) FROM commits), "
            "(SELECT COUNT(*) FROM commits WHERE published = 0)"
        ).fetchone()
        return int(commits), int(commits) - int(unpublished)
    except sqlite3.Error:
        return None
    finally:
        connection.close()


VIEWS_COUNT = "SELECT COUNT(*) FROM documents WHERE collection = 'order_views'"
AWAITING = "json_extract(doc, '$.payment.status') = 'awaiting_payment'"
AWAITING_COUNT = f"SELECT COUNT(*) FROM documents WHERE collection = 'order_views' AND {AWAITING}"
# Views awaiting payment that this poller has not counted yet. The `instr` is a cheap necessary
# condition (a view's payment.status becomes awaiting_payment only by folding a
# PaymentRequested, which adds that event type to its timeline) that spares most JSON parses;
# json_extract decides.
NEWLY_AWAITING = (
    "SELECT key FROM documents WHERE collection = 'order_views' "
    "AND key NOT IN (SELECT key FROM temp.counted) "
    f"AND instr(doc, '\"PaymentRequested\"') > 0 AND {AWAITING}"
)


class ViewCounter:
    """Counts views, and views awaiting payment, in order.db at a cost that does not grow with
    every poll: a view once seen awaiting payment is remembered (a temporary table of this
    read-only connection) and not parsed again. That relies on nothing moving a view on from
    awaiting_payment during this benchmark (nobody pays); `exact_awaiting` checks it at the end.

    Counting everything with json_extract on every poll cost ~0.3 s of CPU per poll at 50,000
    views (each ~2 KB of JSON): a third of a core taken from the services being measured."""

    def __init__(self, path: Path, n: int) -> None:
        self.path = path
        self.n = n
        self.connection: sqlite3.Connection | None = None
        self.views = 0
        self.awaiting = 0

    def _connect(self) -> sqlite3.Connection | None:
        if self.connection is None:
            connection = read_only(self.path)
            if connection is None:
                return None
            connection.isolation_level = None  # no read transaction held between polls
            connection.execute("PRAGMA mmap_size = 1073741824")
            connection.execute("CREATE TEMP TABLE counted (key TEXT PRIMARY KEY) WITHOUT ROWID")
            self.connection = connection
        return self.connection

    def count(self, awaiting: bool = True) -> tuple[int, int | None] | None:
        """(views, views awaiting payment or None when not asked), or None while order.db
        cannot be read yet."""
        connection = self._connect()
        if connection is None:
            return None
        try:
            if self.views < self.n:  # views are never deleted: once all are there, stop
                self.views = int(connection.execute(VIEWS_COUNT).fetchone()[0])
            scan = awaiting and self.awaiting < self.n
            new = connection.execute(NEWLY_AWAITING).fetchall() if scan else []
        except sqlite3.Error:  # no documents table yet
            return None
        if new:
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO temp.counted VALUES (?)", new)
            connection.execute("COMMIT")
            self.awaiting += len(new)
        return self.views, (self.awaiting if awaiting else None)

    def exact_awaiting(self) -> int | None:
        """Views awaiting payment now, every document parsed (once, at the end)."""
        connection = self._connect()
        if connection is None:
            return None
        try:
            return int(connection.execute(AWAITING_COUNT).fetchone()[0])
        except sqlite3.Error:
            return None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def count_payment_requested(path: Path) -> int | None:
    """Exactly: PaymentRequested envelopes in every commit's `events` array (one full scan)."""
    connection = read_only(path)
    if connection is None:
        return None
    try:
        row = connection.execute(
            "SELECT COUNT(*) FROM commits, json_each(commits.events) "
            "WHERE json_extract(json_each.value, '$.event_type') = 'PaymentRequested'"
        ).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return None
    finally:
        connection.close()


@dataclass
class DrainResult:
    n: int
    completed: bool
    timeout_s: float
    poll_interval_s: float
    wall_s: float
    healthy_s: dict[str, float | None]
    first_progress_s: dict[str, float | None]
    stage_s: dict[str, float | None]
    stage_rate: dict[str, float | None]
    steady_rate: dict[str, float | None]
    final_counts: dict[str, int]
    payment_requested_events: int | None
    views_awaiting_payment_exact: int | None
    cpu_s: dict[str, float | None]
    cores: dict[str, float | None]
    peak_rss_mib: dict[str, float | None]
    broker_rss_mib: dict[str, float | None]
    failure: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)


def steady_rate(samples: list[dict[str, Any]], stage: str, n: int) -> float | None:
    """Rate between the first polls at which the stage reached 10 % and 90 % of N."""
    counted = [s for s in samples if s[stage] is not None]
    low = next((s["t"] for s in counted if s[stage] >= 0.1 * n), None)
    high = next((s["t"] for s in counted if s[stage] >= 0.9 * n), None)
    if low is None or high is None or high <= low:
        return None
    return 0.8 * n / float(high - low)


def drain(
    bootstrap: str,
    broker_pid: int | None,
    n: int,
    timeout_s: float,
    poll_interval_s: float,
    data_dir: Path,
) -> DrainResult:
    """Launch the services, poll the stores until every stage reached N, stop them."""
    payment_db = data_dir / "payment.db"
    view_counter = ViewCounter(data_dir / "order.db", n)
    broker_cpu_0 = cpu_seconds(broker_pid)
    broker_rss_0 = memory_kib(broker_pid, "VmRSS")
    own_cpu_0 = time.process_time()
    started = time.perf_counter()
    services: list[Service] = []
    samples: list[dict[str, Any]] = []
    done: dict[str, float | None] = dict.fromkeys(STAGES)
    first: dict[str, float | None] = dict.fromkeys(STAGES)
    latest = dict.fromkeys(STAGES, 0)
    failure: str | None = None
    cpu_end: dict[str, float | None] = {}
    rss: dict[str, float | None] = {}
    broker_rss_end: int | None = None
    wall = 0.0
    awaiting_exact: int | None = None
    try:
        for name in SERVICES:
            services.append(launch(name, bootstrap, data_dir))
        next_poll = started
        polls = 0
        while True:
            now = time.perf_counter() - started
            measured: dict[str, tuple[int, float]] = {}  # stage: (count, when)
            if done["published"] is None:
                at = time.perf_counter() - started
                payment = count_payment(payment_db)
                if payment is not None:
                    measured["intents"] = (payment[0], at)
                    measured["published"] = (payment[1], at)
            # Views awaiting payment never outnumber published PaymentRequested: while some are
            # unpublished that stage cannot be complete, and its costly scan runs less often.
            published = measured.get("published", (latest["published"], 0.0))[0]
            scan_awaiting = published >= n or polls % AWAITING_SCAN_EVERY == 0
            at = time.perf_counter() - started
            views = view_counter.count(awaiting=scan_awaiting)
            if views is not None:
                measured["views"] = (views[0], at)
                if views[1] is not None:
                    measured["views_awaiting_payment"] = (views[1], at)
            for stage, (count, at) in measured.items():
                latest[stage] = count
                if first[stage] is None and count > 0:
                    first[stage] = at
                if done[stage] is None and count >= n:
                    done[stage] = at
            polls += 1
            for service in services:
                if service.healthy_s is None and service.health():
                    service.healthy_s = time.perf_counter() - started
                if service.process.poll() is not None:
                    failure = (
                        f"{service.name} exited with {service.process.returncode}; "
                        f"log tail:\n{service.log_tail()}"
                    )
            sample: dict[str, Any] = {"t": round(now, 3)}
            for stage in STAGES:  # None: not measured on this poll
                sample[stage] = n if done[stage] is not None else measured.get(stage, (None,))[0]
            for service in services:
                sample[f"cpu_{service.name}"] = cpu_seconds(service.pid)
            broker_cpu = cpu_seconds(broker_pid)
            if broker_cpu is not None and broker_cpu_0 is not None:
                broker_cpu = round(broker_cpu - broker_cpu_0, 2)
            sample["cpu_broker"] = broker_cpu
            sample["cpu_bench"] = round(time.process_time() - own_cpu_0, 2)
            samples.append(sample)
            if failure:
                break
            if all(at is not None for at in done.values()):
                break
            if now > timeout_s:
                failure = f"timed out after {timeout_s:.0f} s at {latest}"
                break
            next_poll += poll_interval_s
            time.sleep(max(0.0, next_poll - time.perf_counter()))
        wall = time.perf_counter() - started
        own_cpu = time.process_time() - own_cpu_0
        for service in services:
            cpu_end[service.name] = cpu_seconds(service.pid)
            rss[service.name] = _mib(memory_kib(service.pid, "VmHWM"))
        broker_now = cpu_seconds(broker_pid)
        cpu_end["broker"] = (
            broker_now - broker_cpu_0
            if broker_now is not None and broker_cpu_0 is not None
            else None
        )
        cpu_end["bench (poller)"] = own_cpu
        rss["broker"] = _mib(memory_kib(broker_pid, "VmHWM"))
        broker_rss_end = memory_kib(broker_pid, "VmRSS")
        awaiting_exact = view_counter.exact_awaiting()
    finally:
        view_counter.close()
        healthy = {service.name: service.healthy_s for service in services}
        for service in services:
            code = service.stop()
            if code not in (0, -signal.SIGTERM) and failure is None:
                failure = f"{service.name} stopped with {code}; log tail:\n{service.log_tail()}"
    exact = count_payment_requested(payment_db)
    completed = failure is None and all(at is not None for at in done.values())
    if completed and exact != n:
        failure = f"{exact} PaymentRequested events in payment.db, expected {n}"
        completed = False
    if completed and awaiting_exact != n:
        failure = f"{awaiting_exact} views awaiting payment by a full count, expected {n}"
        completed = False
    return DrainResult(
        n=n,
        completed=completed,
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
        wall_s=wall,
        healthy_s=healthy,
        first_progress_s=first,
        stage_s=done,
        stage_rate={k: (n / v if v else None) for k, v in done.items()},
        steady_rate={stage: steady_rate(samples, stage, n) for stage in STAGES},
        final_counts=dict(latest),
        payment_requested_events=exact,
        views_awaiting_payment_exact=awaiting_exact,
        cpu_s=cpu_end,
        cores={k: (v / wall if v is not None else None) for k, v in cpu_end.items()},
        peak_rss_mib=rss,
        broker_rss_mib={
            "at_drain_start": _mib(broker_rss_0),
            "at_drain_end": _mib(broker_rss_end),
        },
        failure=failure,
        samples=samples,
    )


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


# --- report -----------------------------------------------------------------------------------


def ratios(baselines: dict[str, Any], result: DrainResult) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for stage in ("views", "views_awaiting_payment", "intents"):
        rate = result.stage_rate[stage]
        for base in ("round_trip", "consume_decode"):
            out[f"{stage}/{base}"] = rate / baselines[base]["rate"] if rate else None
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary(n: int, backlog_bytes: int, baselines: dict[str, Any], result: DrainResult) -> str:
    lines = [
        f"backlog: {n:,} OrderPlaced on {ORDER_TOPIC} ({PARTITIONS} partitions), "
        f"{backlog_bytes / n:,.0f} B per value",
        "",
        f"{'raw baseline':<44}{'seconds':>10}{'records/s':>12}",
        f"{'preload (produce, acks=all)':<44}"
        f"{baselines['preload']['seconds']:>10.2f}{baselines['preload']['rate']:>12,.0f}",
        f"{'consume + Envelope decode (no group)':<44}"
        f"{baselines['consume_decode']['seconds']:>10.2f}"
        f"{baselines['consume_decode']['rate']:>12,.0f}",
        f"{'produce -> consume round trip':<44}"
        f"{baselines['round_trip']['seconds']:>10.2f}{baselines['round_trip']['rate']:>12,.0f}",
        "",
        f"{'drain (clock from service launch)':<44}{'first >0':>9}{'seconds':>10}"
        f"{'orders/s':>12}{'steady/s':>11}",
    ]
    for stage in STAGES:
        lines.append(
            f"{STAGE_LABELS[stage]:<44}{_fmt(result.first_progress_s[stage], '9.2f'):>9}"
            f"{_fmt(result.stage_s[stage], '10.2f'):>10}"
            f"{_fmt(result.stage_rate[stage], '12,.0f'):>12}"
            f"{_fmt(result.steady_rate[stage], '11,.0f'):>11}"
        )
    healthy = ", ".join(f"{k} {_fmt(v, '.2f')} s" for k, v in result.healthy_s.items())
    lines += [
        f"  (GET /health = 200 after: {healthy} (— = not before the drain ended); "
        "first >0 = first poll with any; steady = between 10 % and 90 % of N)",
        "",
    ]
    r = ratios(baselines, result)
    for stage, label in (
        ("views", "every view exists"),
        ("views_awaiting_payment", "every PaymentRequested in its view"),
    ):
        rt = r[f"{stage}/round_trip"]
        verdict = "" if rt is None else ("met" if rt >= TARGET_RATIO else "NOT met")
        lines.append(
            f"drain ({label}) / raw round trip {_fmt(rt, '.2f')}x "
            f"(target >= {TARGET_RATIO:.2f}x: {verdict}); "
            f"/ raw consume+decode {_fmt(r[f'{stage}/consume_decode'], '.2f')}x"
        )
    lines += ["", f"{'process':<18}{'CPU s':>9}{'cores':>8}{'peak RSS MiB':>15}"]
    for name, cpu in result.cpu_s.items():
        lines.append(
            f"{name:<18}{_fmt(cpu, '9.1f'):>9}{_fmt(result.cores[name], '8.2f'):>8}"
            f"{_fmt(result.peak_rss_mib.get(name), '15.1f'):>15}"
        )
    lines.append(
        f"  (over {result.wall_s:.1f} s of drain; the broker's peak RSS is its lifetime peak: "
        f"RSS {result.broker_rss_mib['at_drain_start']} MiB at drain start, "
        f"{result.broker_rss_mib['at_drain_end']} MiB at the end)"
    )
    if result.failure:
        lines += ["", f"FAILED: {result.failure}"]
    return "\n".join(lines)


def write_results(
    results_dir: Path,
    n: int,
    baselines: dict[str, Any],
    result: DrainResult,
    text: str,
) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "benchmark": "drain",
        "at": stamp,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "config": {
            "n": n,
            "partitions": PARTITIONS,
            "poll_interval_s": result.poll_interval_s,
            "raw_fetch_wait_ms": FETCH_WAIT_MS,
            "timeout_s": result.timeout_s,
        },
        "baselines": baselines,
        "drain": asdict(result),
        "ratios": ratios(baselines, result),
        "target_ratio": TARGET_RATIO,
        "summary": text,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"drain-{stamp}.json"
    body = json.dumps(document, indent=2) + "\n"
    path.write_text(body)
    (results_dir / "drain-latest.json").write_text(body)
    return path


# --- main -------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drain",
        description="Backlog drain of order.events by the payment and order services, "
        "against raw aiokafka baselines from the same run.",
    )
    parser.add_argument("--n", type=int, default=50_000, help="backlog size (default 50,000)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="drain timeout in seconds (default 600)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL_S,
        help="seconds between polls of the stores (default 0.5); a longer one shows how much "
        "the polling itself slows the drain",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the services' data directory and logs"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    n: int = args.n
    print(f"building {n:,} OrderPlaced envelopes ...", flush=True)
    records = build_backlog(n)
    backlog_bytes = sum(len(value) for _, value, _ in records)
    data_dir = Path(tempfile.mkdtemp(prefix="yellowcart-drain-"))
    broker = LocalBroker()
    result: DrainResult | None = None
    try:
        # the broker's start-up probe logs each refused connection while it boots
        aiokafka_log = logging.getLogger("aiokafka")
        aiokafka_log.setLevel(logging.CRITICAL)
        broker.start_sync()
        aiokafka_log.setLevel(logging.NOTSET)
        bootstrap = broker.bootstrap_servers
        print(f"broker {bootstrap}; preloading and measuring raw baselines ...", flush=True)
        baselines = asyncio.run(prepare(bootstrap, records, broker.create_topics))
        del records
        print(
            f"  preload {baselines['preload']['rate']:,.0f}/s, "
            f"consume+decode {baselines['consume_decode']['rate']:,.0f}/s, "
            f"round trip {baselines['round_trip']['rate']:,.0f}/s",
            flush=True,
        )
        print(f"draining with payment + order services (data: {data_dir}) ...", flush=True)
        result = drain(bootstrap, broker.pid, n, args.timeout, args.poll_interval, data_dir)
    finally:
        broker.stop_sync()
        keep = args.keep_data or result is None or result.failure is not None
        if keep:
            print(f"data and service logs kept in {data_dir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(data_dir)
    text = summary(n, backlog_bytes, baselines, result)
    print()
    print(text)
    path = write_results(args.results_dir, n, baselines, result, text)
    print(f"\nwrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    return 0 if result.completed else 1


if __name__ == "__main__":
    sys.exit(main())
