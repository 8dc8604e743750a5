"""Open-loop load benchmark of the whole system: `python -m bench.load`.

What it does, per (seller mix, offered rate):

1. **Starts the system as a user does**: `yellowcart up --port <free> --data-dir <fresh dir>` as a
   subprocess (a fresh system per run unless `--reuse`), waits for `GET /health` = 200, and takes
   the PIDs of the gateway (the `up` process itself), the broker (its `tansu` child) and the four
   services (`up.json`). A few warm-up orders are then pushed through and the run waits until
   they reached the payment store, the penalty store and the order view, so the consumers have
   joined their groups before anything is measured. Warm-up orders are not counted.
2. **Offers a fixed rate, open loop.** Order i has a scheduled send time `start + i / rate`; the
   scheduler sends it then whatever earlier requests are still waiting for, over a pool of
   keep-alive connections (`bench/loadclient.py`). Client latency is measured **from the
   scheduled send time** to the end of the answer, so time spent queued anywhere (in the client
   waiting for a connection, in the gateway, in a service) is counted, and a slow system cannot
   slow the offered load down (no coordinated omission). The send lag (actual - scheduled) is
   reported too: it shows whether the client itself kept up. Errors (non-2xx, transport errors,
   timeouts) are counted apart from latencies; latencies are of 2xx answers only.
   Half of the orders are paid through the signed gateway callback ~0.75 s after their 201
   (retried on 404 until the payment service has opened the intent, for up to 30 s); 20 % are
   cancelled by the buyer ~1 s after their 201 (200, or 409 counted as a conflict). Both are
   reported separately; only `POST /orders` is the headline. Buyers are `buyer-0…` round robin
   (tokens minted once); sellers are `shop-0…shop-199` uniformly (`spread`) or 80 % `shop-hot`
   (`hot`, what a live-stream sale looks like).
3. **Measures what happens behind the 201**, from the stores (read-only SQLite, `loadstores`):
   * placed → PaymentRequested: `occurred_at` of `PaymentRequested` (payment.db, stream
     `payment-<order>`) minus `occurred_at` of `OrderPlaced` (order.db): Kafka hop, payment
     consumer, payment commit. Both stamps come from the same machine clock.
   * placed → view: the wall-clock time a poller process first saw the order's document in
     `order_views` (order.db; the ids answered 201 and not yet seen, looked up every 10 ms),
     minus `OrderPlaced.occurred_at`. Late by at most one period between polls (reported). The
     JSON also has it measured from the client's 201 instead (`response_to_view_ms`).
   * placed → SellerOrderCounted: its `occurred_at` (penalty.db, stream `seller-<seller>`) minus
     `OrderPlaced.occurred_at`.
   * drain: from the end of the offered window until every order that got a 201 has all three
     (polled every 0.25 s, `--drain-timeout`, else "not drained").
   * CPU per process: utime+stime from /proc/<pid>/stat over the offered window (and over the
     drain), as cores = CPU seconds / wall seconds; peak RSS = VmHWM (lifetime peak). The load
     client's own CPU comes from getrusage(RUSAGE_SELF); the view poller's from /proc.
4. Prints a summary and the knee per mix (the highest offered rate with client p99 ≤ 100 ms, no
   errors and achieved ≥ 95 % of offered), and writes `bench/results/load-<UTC>.json` and
   `bench/results/load-latest.json`.

Achieved rate = 2xx orders / max(duration, last 2xx answer - window start): the rate at which
the system actually completed orders; it equals the offered rate when the system keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson

from bench.loadclient import ConnectionPool, Reply, TransportError
from bench.loadstores import CommitTail, ViewPoller, ViewPollResult, views_present
from bench.loadsystem import (
    SERVICE_NAMES,
    System,
    peak_rss_mb,
    sample_cpu,
    start_with_retries,
)
from shared.kernel.settings import DEV_GATEWAY_SECRET, Settings
from shared.kernel.webhooks import signed_headers

SETTINGS = Settings()
TOKEN_SECRET = SETTINGS.token_secret
GATEWAY_SECRET = DEV_GATEWAY_SECRET
DEFAULT_RATES = (25, 50, 100, 200, 400)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
KNEE_P99_MS = 100.0
KNEE_ACHIEVED_SHARE = 0.95
HOT_SELLER = "shop-hot"
HOT_SHARE = 0.8
PAY_SHARE = 0.5
CANCEL_SHARE = 0.2  # of all orders, taken from the unpaid ones
CALLBACK_DELAY_S = 0.75
CANCEL_DELAY_S = 1.0
CALLBACK_GIVE_UP_S = 30.0
DRAIN_POLL_S = 0.25
PROCESS_ORDER = ("gateway", "broker", *SERVICE_NAMES, "client", "poller")

ORDER_TEMPLATE: dict[str, Any] = {
    "items": [{"sku": "KAOS-01", "variant": "kuning/L", "quantity": 2, "unit_price": 75000}],
    "shipping_address": {
        "recipient": "Siti Rahma",
        "phone": "081234567890",
        "street": "Jl. Melati No. 5",
        "city": "Bandung",
        "province": "Jawa Barat",
        "postal_code": "40115",
    },
    "payment_method": "bank_transfer",
}
CANCEL_BODY = orjson.dumps({"reason": "changed_mind"})


@dataclass(frozen=True)
class Config:
    rates: tuple[float, ...]
    duration_s: float
    mixes: tuple[str, ...]
    reuse: bool
    buyers: int
    sellers: int
    max_connections: int
    request_timeout_s: float
    drain_timeout_s: float
    view_poll_s: float
    warmup_orders: int
    random_state: int
    keep_data: bool
    results_dir: Path
    quick: bool


@dataclass(slots=True)
class OrderRecord:
    index: int
    scheduled: float  # event-loop clock (monotonic), as every client-side time here
    buyer: int
    seller_id: str
    action: str  # "pay", "cancel" or "none"
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0
    error: str | None = None
    order_id: str | None = None
    total_amount: int = 0


@dataclass
class SideRequests:
    """The callbacks and cancels that follow the orders."""

    callback_attempt_ms: list[float] = field(default_factory=list)
    callback_to_accepted_ms: list[float] = field(default_factory=list)
    callback_retries_404: int = 0
    callback_outcomes: Counter[str] = field(default_factory=Counter)
    callback_errors: Counter[str] = field(default_factory=Counter)
    cancel_ms: list[float] = field(default_factory=list)
    cancel_ok: int = 0
    cancel_conflicts: int = 0
    cancel_errors: Counter[str] = field(default_factory=Counter)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": _round(percentile(values, 50)),
        "p95": _round(percentile(values, 95)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values) if values else None),
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def mint_buyer_tokens(count: int) -> list[bytes]:
    """Per buyer, the header lines every request of that buyer starts with."""
    now = int(time.time())
    lines = []
    for number in range(count):
        claims = {
            "sub": f"buyer-{number}",
            "role": "buyer",
            "iss": SETTINGS.token_issuer,
            "aud": SETTINGS.token_audience,
            "iat": now,
            "exp": now + 86_400,
        }
        token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
        lines.append(
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
        )
    return lines


def utc_now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Workload:
    """One offered rate with one seller mix against a running system."""

    def __init__(self, pool: ConnectionPool, config: Config, mix: str, rate: float) -> None:
        self.pool = pool
        self.config = config
        self.mix = mix
        self.rate = rate
        self.random = random.Random(f"{config.random_state}-{mix}-{rate}")
        self.buyer_headers = mint_buyer_tokens(config.buyers)
        sellers = [f"shop-{number}" for number in range(config.sellers)]
        self.bodies = {
            seller: orjson.dumps({"seller_id": seller, **ORDER_TEMPLATE})
            for seller in [*sellers, HOT_SELLER, "shop-warmup"]
        }
        self.spread_sellers = sellers
        self.records: list[OrderRecord] = []
        self.side = SideRequests()
        self.tasks: set[asyncio.Task[None]] = set()
        self.orders_in_flight = 0
        self.on_accepted: Callable[[str], None] | None = None  # the view poller's watch
        self.window_start = 0.0
        self.window_end = 0.0

    # ---------------------------------------------------------------- the open-loop schedule

    def plan(self) -> list[OrderRecord]:
        count = max(round(self.rate * self.config.duration_s), 1)
        planned = []
        for index in range(count):
            if self.mix == "hot" and self.random.random() < HOT_SHARE:
                seller = HOT_SELLER
            else:
                seller = self.random.choice(self.spread_sellers)
            draw = self.random.random()
            action = (
                "pay"
                if draw < PAY_SHARE
                else "cancel"
                if draw < PAY_SHARE + CANCEL_SHARE
                else "none"
            )
            planned.append(
                OrderRecord(
                    index=index,
                    scheduled=0.0,
                    buyer=index % self.config.buyers,
                    seller_id=seller,
                    action=action,
                )
            )
        return planned

    async def offer(self) -> None:
        """Send every planned order at its scheduled time, never waiting for an answer."""
        loop = asyncio.get_running_loop()
        self.records = self.plan()
        self.window_start = loop.time() + 0.05
        self.window_end = self.window_start + len(self.records) / self.rate
        for record in self.records:
            record.scheduled = self.window_start + record.index / self.rate
            delay = record.scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.orders_in_flight += 1
            task = loop.create_task(self.order_flow(record))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        delay = self.window_end - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def order_flow(self, record: OrderRecord) -> None:
        loop = asyncio.get_running_loop()
        record.sent = loop.time()
        headers = b"".join(
            (
                self.buyer_headers[record.buyer],
                b"Idempotency-Key: ",
                uuid.uuid4().hex.encode(),
                b"\r\n",
            )
        )
        reply = await self._request(b"POST", b"/orders", headers, self.bodies[record.seller_id])
        record.answered = loop.time()
        self.orders_in_flight -= 1
        if isinstance(reply, str):
            record.error = reply
            return
        record.status = reply.status
        if not 200 <= reply.status < 300:
            record.error = f"HTTP {reply.status}"
            return
        try:
            accepted = orjson.loads(reply.body)
            record.order_id = str(accepted["order_id"])
            record.total_amount = int(accepted["total_amount"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            record.error = "unreadable 201 body"
            return
        if self.on_accepted is not None:
            self.on_accepted(record.order_id)
        if record.action == "pay":
            await self.pay(record)
        elif record.action == "cancel":
            await self.cancel(record)

    async def _request(
        self, method: bytes, path: bytes, headers: bytes, body: bytes
    ) -> Reply | str:
        """The answer, or a short description of why there is none."""
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                return await self.pool.request(method, path, headers, body)
        except TimeoutError:
            return "timeout"
        except TransportError as error:
            return f"transport: {str(error)[:80]}"

    async def pay(self, record: OrderRecord) -> None:
        """The gateway's signed callback, retried on 404 until the intent exists."""
        loop = asyncio.get_running_loop()
        assert record.order_id is not None
        first_due = due = record.answered + CALLBACK_DELAY_S
        await asyncio.sleep(max(due - loop.time(), 0))
        body = orjson.dumps(
            {
                "order_id": record.order_id,
                "gateway_reference": f"gw-{uuid.uuid4().hex}",
                "amount": record.total_amount,
                "currency": "IDR",
                "paid_at": utc_now_rfc3339(),
            }
        )
        signed = signed_headers(GATEWAY_SECRET, body, datetime.now(UTC))
        headers = "".join(
            f"{name}: {value}\r\n"
            for name, value in {"Content-Type": "application/json", **signed}.items()
        ).encode()
        backoff = 0.25
        while True:
            reply = await self._request(b"POST", b"/payments/callbacks", headers, body)
            now = loop.time()
            self.side.callback_attempt_ms.append(1000 * (now - due))
            if isinstance(reply, str):
                self.side.callback_errors[reply] += 1
                return
            if reply.status == 404 and now - first_due < CALLBACK_GIVE_UP_S:
                self.side.callback_retries_404 += 1
                due = now + backoff
                backoff = min(backoff * 2, 2.0)
                await asyncio.sleep(backoff)
                continue
            if 200 <= reply.status < 300:
                self.side.callback_to_accepted_ms.append(1000 * (now - first_due))
                try:
                    self.side.callback_outcomes[str(orjson.loads(reply.body)["outcome"])] += 1
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    self.side.callback_outcomes["unreadable"] += 1
            else:
                self.side.callback_errors[f"HTTP {reply.status}"] += 1
            return

    async def cancel(self, record: OrderRecord) -> None:
        loop = asyncio.get_running_loop()
        due = record.answered + CANCEL_DELAY_S
        await asyncio.sleep(max(due - loop.time(), 0))
        path = f"/orders/{record.order_id}/cancel".encode()
        reply = await self._request(b"POST", path, self.buyer_headers[record.buyer], CANCEL_BODY)
        if isinstance(reply, str):
            self.side.cancel_errors[reply] += 1
            return
        self.side.cancel_ms.append(1000 * (loop.time() - due))
        if 200 <= reply.status < 300:
            self.side.cancel_ok += 1
        elif reply.status == 409:
            self.side.cancel_conflicts += 1
        else:
            self.side.cancel_errors[f"HTTP {reply.status}"] += 1

    async def warm_up(self, count: int) -> list[str]:
        """Sequential orders before the window (not measured); returns their order ids."""
        placed = []
        for number in range(count):
            headers = self.buyer_headers[number % len(self.buyer_headers)] + (
                f"Idempotency-Key: {uuid.uuid4().hex}\r\n".encode()
            )
            reply = await self._request(b"POST", b"/orders", headers, self.bodies["shop-warmup"])
            if isinstance(reply, Reply) and reply.status == 201:
                placed.append(str(orjson.loads(reply.body)["order_id"]))
        return placed


@dataclass
class Stores:
    """Incremental readers of the three stores a placed order must reach."""

    data_dir: Path
    order: CommitTail = field(init=False)
    payment: CommitTail = field(init=False)
    penalty: CommitTail = field(init=False)

    def __post_init__(self) -> None:
        self.order = CommitTail(self.data_dir / "order.db", ("OrderPlaced",))
        self.payment = CommitTail(self.data_dir / "payment.db", ("PaymentRequested",))
        self.penalty = CommitTail(self.data_dir / "penalty.db", ("SellerOrderCounted",))

    def poll(self) -> None:
        for tail in (self.order, self.payment, self.penalty):
            tail.poll()

    def missing(self, order_ids: set[str], viewed: set[str]) -> dict[str, int]:
        return {
            "OrderPlaced": len(order_ids - self.order.found["OrderPlaced"].keys()),
            "PaymentRequested": len(order_ids - self.payment.found["PaymentRequested"].keys()),
            "SellerOrderCounted": len(order_ids - self.penalty.found["SellerOrderCounted"].keys()),
            "view": len(order_ids - viewed),
        }

    def close(self) -> None:
        for tail in (self.order, self.payment, self.penalty):
            tail.close()


async def wait_pipeline(stores: Stores, order_ids: set[str], timeout_s: float) -> bool:
    """Wait until every order id reached every store and has a view."""
    deadline = time.monotonic() + timeout_s
    viewed: set[str] = set()
    while True:
        await asyncio.to_thread(stores.poll)
        viewed |= await asyncio.to_thread(
            views_present, stores.data_dir / "order.db", order_ids - viewed
        )
        if not any(stores.missing(order_ids, viewed).values()):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


async def measure(system: System, config: Config, mix: str, rate: float) -> dict[str, Any]:
    """One (mix, rate) against a running system; returns the run's result document."""
    target = urlsplit(system.base_url)
    assert target.hostname is not None and target.port is not None
    pool = ConnectionPool(target.hostname, target.port, max_connections=config.max_connections)
    workload = Workload(pool, config, mix, rate)
    stores = Stores(system.data_dir)
    loop = asyncio.get_running_loop()
    poller: ViewPoller | None = None
    try:
        warm_ids = set(await workload.warm_up(config.warmup_orders))
        warmed = await wait_pipeline(stores, warm_ids, 60) if warm_ids else True
        poller = ViewPoller(system.data_dir / "order.db", config.view_poll_s)
        workload.on_accepted = poller.watch
        pids = {**system.pids, "poller": poller.pid}
        await asyncio.sleep(0.5)  # the poller's first scan

        stores.poll()  # skip what is already there (warm-up, an earlier rate) before timing
        cpu_before = sample_cpu(pids)
        rusage_before = resource.getrusage(resource.RUSAGE_SELF)
        wall_offset = time.time() - loop.time()
        await workload.offer()
        cpu_window = sample_cpu(pids)
        rusage_window = resource.getrusage(resource.RUSAGE_SELF)
        window_s = workload.window_end - workload.window_start

        # Drain: every order answered, and every 201 reached payment, penalty and the view.
        drained_at: float | None = None
        viewed: set[str] = set()
        order_db = system.data_dir / "order.db"
        while loop.time() - workload.window_end < config.drain_timeout_s:
            placed = {r.order_id for r in workload.records if r.order_id is not None}
            await asyncio.to_thread(stores.poll)
            viewed |= await asyncio.to_thread(views_present, order_db, placed - viewed)
            if workload.orders_in_flight == 0 and not any(stores.missing(placed, viewed).values()):
                drained_at = loop.time()
                break
            await asyncio.sleep(DRAIN_POLL_S)
        cpu_drain = sample_cpu(pids)
        peak_rss = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        drain_end = loop.time()
        rusage_drain = resource.getrusage(resource.RUSAGE_SELF)
        if workload.tasks:  # callbacks and cancels still under way
            await asyncio.wait(set(workload.tasks), timeout=CALLBACK_GIVE_UP_S + 60)
        view_result, poller = poller.stop(), None
        await asyncio.to_thread(stores.poll)
        restarts = system.service_restarts()
    finally:
        if poller is not None:
            poller.stop()
        await pool.close()
        stores.close()

    return report_run(
        config=config,
        mix=mix,
        rate=rate,
        workload=workload,
        pool=pool,
        stores=stores,
        views=view_result,
        wall_offset=wall_offset,
        window_s=window_s,
        drained_s=None if drained_at is None else drained_at - workload.window_end,
        drain_wall_s=drain_end - workload.window_end,
        processes=process_usage(
            pids,
            cpu_before,
            cpu_window,
            cpu_drain,
            window_s,
            drain_end - workload.window_end,
            peak_rss,
            client=(
                _rusage_cpu(rusage_window) - _rusage_cpu(rusage_before),
                _rusage_cpu(rusage_drain) - _rusage_cpu(rusage_window),
            ),
        ),
        warmed=warmed,
        restarts=restarts,
    )


def _rusage_cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def process_usage(
    pids: dict[str, int],
    before: dict[str, float | None],
    window: dict[str, float | None],
    drain: dict[str, float | None],
    window_s: float,
    drain_s: float,
    peak_rss: dict[str, float | None],
    client: tuple[float, float],
) -> dict[str, dict[str, Any]]:
    usage: dict[str, dict[str, Any]] = {}
    for name, pid in pids.items():
        start, mid, end = before.get(name), window.get(name), drain.get(name)
        load_cpu = mid - start if start is not None and mid is not None else None
        drain_cpu = end - mid if mid is not None and end is not None else None
        usage[name] = {
            "pid": pid,
            "cpu_s_window": _round(load_cpu, 2),
            "cores_window": _round(load_cpu / window_s if load_cpu is not None else None, 3),
            "cpu_s_drain": _round(drain_cpu, 2),
            "cores_drain": _round(
                drain_cpu / drain_s if drain_cpu is not None and drain_s > 0 else None, 3
            ),
            "peak_rss_mb": _round(peak_rss.get(name)),
        }
    usage["client"] = {
        "pid": os.getpid(),
        "cpu_s_window": round(client[0], 2),
        "cores_window": round(client[0] / window_s, 3),
        "cpu_s_drain": round(client[1], 2),
        "cores_drain": round(client[1] / drain_s, 3) if drain_s > 0 else None,
        "peak_rss_mb": _round(peak_rss_mb(os.getpid())),
    }
    return usage


def report_run(
    *,
    config: Config,
    mix: str,
    rate: float,
    workload: Workload,
    pool: ConnectionPool,
    stores: Stores,
    views: ViewPollResult,
    wall_offset: float,
    window_s: float,
    drained_s: float | None,
    drain_wall_s: float,
    processes: dict[str, dict[str, Any]],
    warmed: bool,
    restarts: dict[str, int],
) -> dict[str, Any]:
    records = workload.records
    ok = [r for r in records if r.order_id is not None]
    errors = Counter(r.error or "" for r in records if r.order_id is None)
    last_ok = max((r.answered for r in ok), default=workload.window_start)
    ok_in_window = sum(1 for r in ok if r.answered <= workload.window_end)
    placed_at = stores.order.found["OrderPlaced"]
    requested = stores.payment.found["PaymentRequested"]
    counted = stores.penalty.found["SellerOrderCounted"]

    def lag_ms(later: dict[str, float]) -> list[float]:
        return [
            1000 * (later[r.order_id] - placed_at[r.order_id])
            for r in ok
            if r.order_id in later and r.order_id in placed_at
        ]

    ids = {r.order_id for r in ok if r.order_id is not None}
    return {
        "mix": mix,
        "offered_rate": rate,
        "duration_s": round(window_s, 3),
        "orders_offered": len(records),
        "orders_ok": len(ok),
        "orders_ok_within_window": ok_in_window,
        "achieved_rate": round(len(ok) / max(window_s, last_ok - workload.window_start), 2),
        "rate_within_window": round(ok_in_window / window_s, 2),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "client_latency_ms": summary_ms([1000 * (r.answered - r.scheduled) for r in ok]),
        "send_lag_ms": summary_ms([1000 * (r.sent - r.scheduled) for r in records]),
        "scheduled_to_order_placed_ms": summary_ms(
            [
                1000 * (placed_at[r.order_id] - wall_offset - r.scheduled)
                for r in ok
                if r.order_id in placed_at
            ]
        ),
        "placed_to_payment_requested_ms": summary_ms(lag_ms(requested)),
        "placed_to_view_ms": summary_ms(lag_ms(views.first_seen)),
        "response_to_view_ms": summary_ms(
            [
                1000 * (views.first_seen[r.order_id] - wall_offset - r.answered)
                for r in ok
                if r.order_id in views.first_seen
            ]
        ),
        "placed_to_seller_order_counted_ms": summary_ms(lag_ms(counted)),
        "missing_after_drain": stores.missing(ids, set(views.first_seen) & ids),
        "drained": drained_s is not None,
        "drain_s": _round(drained_s, 2),
        "drain_observed_s": round(drain_wall_s, 2),
        "view_poller": {
            "interval_ms": round(1000 * views.interval_s, 1),
            "polls": views.polls,
            "mean_poll_ms": round(views.mean_poll_ms, 2),
            "mean_period_ms": round(views.mean_period_ms, 2),
            "max_poll_ms": round(views.max_poll_ms, 2),
            "errors": views.errors,
        },
        "callbacks": {
            "orders_paid": sum(1 for r in ok if r.action == "pay"),
            "attempt_latency_ms": summary_ms(workload.side.callback_attempt_ms),
            "first_attempt_to_accepted_ms": summary_ms(workload.side.callback_to_accepted_ms),
            "retries_on_404": workload.side.callback_retries_404,
            "outcomes": dict(workload.side.callback_outcomes),
            "errors": dict(workload.side.callback_errors),
        },
        "cancels": {
            "orders_cancelled": sum(1 for r in ok if r.action == "cancel"),
            "latency_ms": summary_ms(workload.side.cancel_ms),
            "ok": workload.side.cancel_ok,
            "conflicts_409": workload.side.cancel_conflicts,
            "errors": dict(workload.side.cancel_errors),
        },
        "connections": {
            "max": pool.max_connections,
            "opened": pool.opened,
            "peak_in_flight": pool.peak_in_flight,
            "stale_retries": pool.stale_retries,
        },
        "processes": processes,
        "warm_up_reached_every_store": warmed,
        "service_restarts": restarts,
    }


# ----------------------------------------------------------------------- running and reporting


def run_all(config: Config) -> list[dict[str, Any]]:
    plan = [(mix, rate) for mix in config.mixes for rate in config.rates]
    root = Path(tempfile.mkdtemp(prefix="yellowcart-load-"))
    results: list[dict[str, Any]] = []
    system: System | None = None
    try:
        for number, (mix, rate) in enumerate(plan, 1):
            if system is None:
                data_dir = root / ("reused" if config.reuse else f"{mix}-{rate:g}")
                print(f"[{number}/{len(plan)}] starting yellowcart up in {data_dir} …", flush=True)
                system = start_with_retries(data_dir)
                print(f"    healthy after {system.startup_s:.1f} s; pids {system.pids}", flush=True)
            print(
                f"[{number}/{len(plan)}] {mix} at {rate:g}/s for {config.duration_s:g} s …",
                flush=True,
            )
            result = asyncio.run(measure(system, config, mix, rate))
            result["system"] = {
                "startup_s": round(system.startup_s, 2),
                "start_attempts_failed": system.start_attempts,
                "fresh": not config.reuse or number == 1,
            }
            results.append(result)
            print("    " + one_line(result), flush=True)
            if not config.reuse:
                code = system.stop()
                result["system"]["up_exit_code"] = code
                system = None
    finally:
        if system is not None:
            system.stop()
        if config.keep_data:
            print(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


def one_line(result: dict[str, Any]) -> str:
    latency = result["client_latency_ms"]
    return (
        f"achieved {result['achieved_rate']:.1f}/s, errors {result['errors']}, "
        f"p50/p99 {_fmt(latency['p50'])}/{_fmt(latency['p99'])} ms, "
        f"drain {_fmt(result['drain_s']) if result['drained'] else 'not drained'}"
    )


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def knees(results: list[dict[str, Any]]) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for result in results:
        found.setdefault(result["mix"], None)
        p99 = result["client_latency_ms"]["p99"]
        if (
            result["errors"] == 0
            and p99 is not None
            and p99 <= KNEE_P99_MS
            and result["achieved_rate"] >= KNEE_ACHIEVED_SHARE * result["offered_rate"]
        ):
            best = found[result["mix"]]
            found[result["mix"]] = max(best or 0, result["offered_rate"])
    return found


def print_summary(results: list[dict[str, Any]]) -> str:
    lines = [
        "client latency of POST /orders from the scheduled send time; lags from OrderPlaced "
        "(ms); drain after the window (s)",
        f"{'mix':<7}{'rate':>6}{'achvd':>8}{'err':>6}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'PR p50':>9}{'PR p99':>9}{'view p50':>10}{'view p99':>10}{'SOC p99':>9}{'drain':>8}",
    ]
    for r in results:
        c = r["client_latency_ms"]
        pr = r["placed_to_payment_requested_ms"]
        view = r["placed_to_view_ms"]
        soc = r["placed_to_seller_order_counted_ms"]
        lines.append(
            f"{r['mix']:<7}{r['offered_rate']:>6g}{r['achieved_rate']:>8.1f}{r['errors']:>6}"
            f"{_fmt(c['p50']):>8}{_fmt(c['p95']):>8}{_fmt(c['p99']):>8}"
            f"{_fmt(pr['p50']):>9}{_fmt(pr['p99']):>9}{_fmt(view['p50']):>10}"
            f"{_fmt(view['p99']):>10}{_fmt(soc['p99']):>9}"
            f"{_fmt(r['drain_s'], 1) if r['drained'] else 'no':>8}"
        )
    short = {"seller-dispute": "dispute", "payment": "pay", "gateway": "gw"}
    names = [short.get(name, name) for name in PROCESS_ORDER]
    lines += [
        "",
        "CPU cores used during the offered window | peak RSS MB (VmHWM)",
        f"{'mix':<7}{'rate':>6}"
        + "".join(f"{n:>8}" for n in names)
        + f"{'total':>8}  |"
        + "".join(f"{n:>8}" for n in names),
    ]
    for r in results:
        procs = r["processes"]
        cores = [procs.get(name, {}).get("cores_window") for name in PROCESS_ORDER]
        total = sum(c for c in cores if c is not None)
        rss = [procs.get(name, {}).get("peak_rss_mb") for name in PROCESS_ORDER]
        lines.append(
            f"{r['mix']:<7}{r['offered_rate']:>6g}"
            + "".join(f"{_fmt(c, 2):>8}" for c in cores)
            + f"{total:>8.2f}  |"
            + "".join(f"{_fmt(m):>8}" for m in rss)
        )
    lines += [
        "",
        "callbacks (half the orders) and buyer cancels (a fifth): counts and latency (ms)",
        f"{'mix':<7}{'rate':>6}{'paid':>7}{'404 retry':>10}{'cb err':>8}{'to acc p50':>11}"
        f"{'to acc p99':>11}{'cancel':>8}{'409':>6}{'c err':>7}{'c p50':>8}{'c p99':>8}",
    ]
    for r in results:
        cb, ca = r["callbacks"], r["cancels"]
        lines.append(
            f"{r['mix']:<7}{r['offered_rate']:>6g}{cb['orders_paid']:>7}{cb['retries_on_404']:>10}"
            f"{sum(cb['errors'].values()):>8}{_fmt(cb['first_attempt_to_accepted_ms']['p50']):>11}"
            f"{_fmt(cb['first_attempt_to_accepted_ms']['p99']):>11}{ca['ok']:>8}"
            f"{ca['conflicts_409']:>6}{sum(ca['errors'].values()):>7}"
            f"{_fmt(ca['latency_ms']['p50']):>8}{_fmt(ca['latency_ms']['p99']):>8}"
        )
    lines.append("")
    for mix, knee in knees(results).items():
        rule = (
            f"p99 <= {KNEE_P99_MS:g} ms, no errors, achieved >= "
            f"{KNEE_ACHIEVED_SHARE:.0%} of offered"
        )
        lines.append(f"knee ({mix}): {f'{knee:g}/s' if knee else 'none of the rates'} ({rule})")
    text = "\n".join(lines)
    print(text)
    return text


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
    }
    with contextlib.suppress(OSError):  # not Linux: no model, no memory size
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mb"] = int(line.split()[1]) // 1024
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["git_head"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return info


def write_results(config: Config, results: list[dict[str, Any]], summary: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "benchmark": "bench.load",
        "finished_at": utc_now_rfc3339(),
        "machine": machine_info(),
        "config": {
            "rates": list(config.rates),
            "duration_s": config.duration_s,
            "mixes": list(config.mixes),
            "fresh_system_per_run": not config.reuse,
            "buyers": config.buyers,
            "spread_sellers": config.sellers,
            "hot_seller_share": HOT_SHARE,
            "pay_share": PAY_SHARE,
            "cancel_share": CANCEL_SHARE,
            "callback_delay_s": CALLBACK_DELAY_S,
            "cancel_delay_s": CANCEL_DELAY_S,
            "max_connections": config.max_connections,
            "request_timeout_s": config.request_timeout_s,
            "drain_timeout_s": config.drain_timeout_s,
            "view_poll_s": config.view_poll_s,
            "warmup_orders": config.warmup_orders,
            "random_state": config.random_state,
            "quick": config.quick,
        },
        "knee_rule": {
            "client_p99_ms_at_most": KNEE_P99_MS,
            "errors": 0,
            "achieved_share_at_least": KNEE_ACHIEVED_SHARE,
        },
        "knees": knees(results),
        "runs": results,
        "summary": summary.splitlines(),
    }
    config.results_dir.mkdir(parents=True, exist_ok=True)
    path = config.results_dir / f"load-{stamp}.json"
    text = json.dumps(document, indent=2) + "\n"
    path.write_text(text)
    (config.results_dir / "load-latest.json").write_text(text)
    return path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Open-loop load benchmark of `yellowcart up` (see the module docstring).",
    )
    parser.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_RATES),
        help="offered orders/s, comma-separated (default %(default)s)",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--mix", choices=("spread", "hot", "both"), default="both")
    parser.add_argument("--reuse", action="store_true", help="one system for every run")
    parser.add_argument("--quick", action="store_true", help="smoke run: spread, 20/s for 5 s")
    parser.add_argument("--buyers", type=int, default=1000)
    parser.add_argument("--sellers", type=int, default=200, help="sellers of the spread share")
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--view-poll", type=float, default=0.01, help="seconds between polls")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured orders first")
    parser.add_argument("--random-state", type=int, default=1)
    parser.add_argument("--keep-data", action="store_true", help="keep the data directories")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    rates = tuple(float(r) for r in args.rates.split(",") if r.strip())
    duration, mixes = args.duration, ("spread", "hot") if args.mix == "both" else (args.mix,)
    if args.quick:
        rates, duration, mixes = (20.0,), 5.0, ("spread",)
    if not rates or any(r <= 0 for r in rates) or duration <= 0:
        parser.error("rates and duration must be positive")
    return Config(
        rates=rates,
        duration_s=duration,
        mixes=mixes,
        reuse=args.reuse,
        buyers=args.buyers,
        sellers=args.sellers,
        max_connections=args.max_connections,
        request_timeout_s=args.request_timeout,
        drain_timeout_s=args.drain_timeout,
        view_poll_s=args.view_poll,
        warmup_orders=args.warmup,
        random_state=args.random_state,
        keep_data=args.keep_data,
        results_dir=args.results_dir,
        quick=args.quick,
    )


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    raise_file_limit()
    results = run_all(config)
    summary = print_summary(results)
    path = write_results(config, results, summary)
    print(f"\nresults: {path} (and {path.parent / 'load-latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
