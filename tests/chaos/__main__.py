"""The chaos suite: `yellowcart up` under a steady mixed flow while processes are killed.

`make chaos` (and `.ci/run`, bounded) starts `yellowcart up --demo-windows` on a fresh data
directory, plays the marketplace's five scenarios in a loop from a few concurrent clients
(pay, buyer cancel, payment deadline, late payment, seller cancellation through the
platform, cash on delivery) and, while they run, one disruption after another:

- SIGKILL of each service (the supervisor restarts it, without any re-send);
- SIGKILL of the broker (`up` restarts it on its port; the services re-send their stores);
- SIGKILL of `up` itself (its children follow it; the suite starts `up` again, as an
  operator's service manager would);
- SIGSTOP of the payment service — the timer-lease holder — past the lease TTL, then SIGCONT;
- SIGSTOP of the broker (a freeze), then SIGCONT.

Each disruption's recovery time is measured until the system answers again end to end (a new
order placed through the gateway reaches the payment service), and for a service kill until
the new process answers its health check. Then the invariants are checked through the API
and the stores: every accepted order readable; no order cancelled twice, no refund twice per
payment, no penalty twice per order; every expired unpaid order cancelled once; replay equal
to the live view (`yellowcart replay`); every hash chain verifies (`yellowcart verify`).

It prints a recovery-time table and exits non-zero if a scenario failed, an invariant broke,
or a recovery took longer than its bound. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from operations.demo.client import Api, DemoFailure
from operations.demo.scenarios import SCENARIOS, Outcome
from operations.localbroker import free_port
from operations.supervisor import answers_health, die_with_parent
from shared.kernel.auth import Role
from shared.kernel.settings import Settings

SERVICES = ("order", "payment", "seller-dispute", "penalty")
START_TO_READY_BOUND_S = 3.0  # a restarted service answers within this of its process start
KILL_TO_READY_BOUND_S = 5.0  # ... and within this of the kill (the supervisor's reaction too)
END_TO_END_BOUND_S = 30.0  # anything else: the flow runs again within this
LEASE_TTL_S = 3.0


@dataclass
class Recovery:
    disruption: str
    seconds: float
    bound: float
    what: str

    @property
    def ok(self) -> bool:
        return self.seconds <= self.bound


@dataclass
class Flow:
    """Clients playing the scenarios in a loop until told to stop."""

    base_url: str
    clients: int
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._play, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _play(self, index: int) -> None:
        while not self.stop.is_set():
            api = Api(self.base_url, Settings(), f"c{index}{uuid4().hex[:6]}")
            for name, scenario in SCENARIOS:
                if self.stop.is_set():
                    return
                outcome = Outcome(name)
                try:
                    scenario(api, outcome)
                    outcome.ok = True
                except (DemoFailure, httpx.HTTPError) as failure:
                    outcome.detail = str(failure)
                with self.lock:
                    self.outcomes.append((name, outcome))

    def finish(self, timeout_s: float) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)


class Stack:
    """`yellowcart up` as a child process, on a fixed port and data directory."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "YELLOWCART_LEASE_TTL_S": str(LEASE_TTL_S)}

    def start(self) -> None:
        log = (self.data_dir / "up.log").open("ab")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "operations", "up", "--demo-windows"),
                *("--port", str(self.port), "--data-dir", str(self.data_dir)),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def state(self) -> dict[str, Any]:
        path = self.data_dir / "up.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                state: dict[str, Any] = json.loads(path.read_text())
                if self.process is not None and state.get("pid") == self.process.pid:
                    return state
            time.sleep(0.1)
        raise RuntimeError("up wrote no state file")

    def service_pid(self, name: str) -> int:
        pid = self.state()["services"][name]["pid"]
        assert isinstance(pid, int)
        return pid

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.state()['services'][name]['port']}"

    def wait_ready(self, timeout_s: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if answers_health(self.base_url):
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"up was not ready within {timeout_s} s; see {self.data_dir}/logs")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def flows_again(base_url: str, started: float, timeout_s: float = 90) -> float:
    """Seconds from `started` until a new order placed through the gateway has reached the
    payment service (the broker, the relay and a consumer all work)."""
    api = Api(base_url, Settings(), f"probe{uuid4().hex[:6]}")
    placed = api.place("bank_transfer")
    order_id = placed["order_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = api.call("GET", f"/payments/{order_id}", Role.BUYER, ok=(200, 404))
        if answer.status_code == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"order {order_id} did not reach the payment service")


def process_age_s(pid: int) -> float:
    """How long ago the process started (Linux: its start time in /proc, against uptime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started_after_boot


def service_back(stack: Stack, name: str, old_pid: int, started: float) -> tuple[float, float]:
    """Seconds from `started` until a new process of `name` answers its health check, and
    seconds from that process's start until then."""
    deadline = started + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError, KeyError, OSError):
            state = stack.state()["services"][name]
            if state["pid"] not in (None, old_pid) and answers_health(
                f"http://127.0.0.1:{state['port']}", 0.5
            ):
                return time.monotonic() - started, process_age_s(state["pid"])
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not come back")


def disrupt(stack: Stack, pause_s: float) -> list[Recovery]:
    recoveries: list[Recovery] = []

    def record(disruption: str, seconds: float, bound: float, what: str) -> None:
        recoveries.append(Recovery(disruption, seconds, bound, what))
        print(f"  {disruption}: {seconds:.2f} s ({what})", flush=True)

    for name in SERVICES:
        time.sleep(pause_s)
        pid = stack.service_pid(name)
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        after_kill, after_start = service_back(stack, name, pid, started)
        record(
            f"SIGKILL {name}",
            after_start,
            START_TO_READY_BOUND_S,
            "new process started → answers /health",
        )
        record(
            f"SIGKILL {name}",
            after_kill,
            KILL_TO_READY_BOUND_S,
            "kill → new process answers /health",
        )

    time.sleep(pause_s)
    payment = stack.service_pid("payment")
    started = time.monotonic()
    os.kill(payment, signal.SIGSTOP)
    time.sleep(LEASE_TTL_S + 2)
    os.kill(payment, signal.SIGCONT)
    record(
        "SIGSTOP payment (lease holder) 5 s",
        flows_again(stack.base_url, started),
        END_TO_END_BOUND_S,
        "stop → an order flows again (includes the 5 s freeze)",
    )

    time.sleep(pause_s)
    broker = stack.state()["broker_pid"]
    started = time.monotonic()
    os.kill(broker, signal.SIGSTOP)
    time.sleep(5)
    os.kill(broker, signal.SIGCONT)
    record(
        "SIGSTOP broker 5 s",
        flows_again(stack.base_url, started),
        END_TO_END_BOUND_S,
        "freeze → an order flows again (includes the 5 s freeze)",
    )

    time.sleep(pause_s)
    broker = stack.state()["broker_pid"]
    started = time.monotonic()
    os.kill(broker, signal.SIGKILL)
    record(
        "SIGKILL broker",
        flows_again(stack.base_url, started),
        END_TO_END_BOUND_S,
        "kill → broker restarted, services re-sent, an order flows",
    )

    time.sleep(pause_s)
    assert stack.process is not None
    started = time.monotonic()
    stack.process.kill()
    stack.process.wait()
    stack.start()
    stack.wait_ready()
    record(
        "SIGKILL up",
        flows_again(stack.base_url, started),
        END_TO_END_BOUND_S,
        "kill → up started again, an order flows",
    )
    return recoveries


def rows(db: Path, sql: str) -> list[Any]:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10) as connection:
        found = connection.execute(sql).fetchall()
    connection.close()
    return found


def events(db: Path, event_type: str, key: str) -> Counter[str]:
    """How often each value of `key` (a data field, or the stream) appears in `event_type`."""
    field_of = "c.stream_id" if key == "stream" else f"json_extract(e.value, '$.data.{key}')"
    return Counter(
        value
        for (value,) in rows(
            db,
            f"SELECT {field_of} FROM commits c, json_each(c.events) e "
            f"WHERE json_extract(e.value, '$.event_type') = '{event_type}'",
        )
    )


def check_invariants(stack: Stack, flow: Flow) -> list[str]:
    broken: list[str] = []
    data = stack.data_dir
    twice = {
        "an order cancelled twice": events(data / "order.db", "OrderCancelled", "stream"),
        "a payment refunded twice": events(
            data / "payment.db", "RefundIssued", "gateway_reference"
        ),
        "an order penalised twice": events(data / "penalty.db", "PenaltyApplied", "order_id"),
        "a deadline expired twice": events(data / "payment.db", "PaymentDeadlineExpired", "stream"),
    }
    for what, counts in twice.items():
        repeated = [key for key, count in counts.items() if count > 1]
        if repeated:
            broken.append(f"{what}: {repeated[:5]}")

    api = Api(stack.base_url, Settings(), "checker")
    cancelled = events(data / "order.db", "OrderCancelled", "stream")
    accepted = [(name, o.order_id) for name, o in flow.outcomes if o.order_id is not None]
    for name, order_id in accepted:
        answer = api.call("GET", f"/orders/{order_id}", Role.OPERATOR, ok=(200, 404))
        if answer.status_code != 200:
            broken.append(f"accepted order {order_id} is not readable")
            continue
        view = answer.json()
        if name == "payment deadline passes":
            reason = (view.get("cancellation") or {}).get("reason")
            if reason != "payment_deadline_expired" or cancelled[f"order-{order_id}"] != 1:
                broken.append(f"expired unpaid order {order_id} not cancelled exactly once")

    for command in (["replay"], ["verify"]):  # replay equal to live, every chain intact
        done = subprocess.run(
            [sys.executable, "-m", "operations", *command, "--data-dir", str(data)],
            env=os.environ,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            broken.append(
                f"yellowcart {command[0]} failed: {done.stdout[-800:]}{done.stderr[-800:]}"
            )
    return broken


def settle(stack: Stack, timeout_s: float = 60) -> None:
    """Wait until every outbox is drained and the order view has stopped changing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        backlog = 0
        for name in SERVICES:
            with contextlib.suppress(httpx.HTTPError, RuntimeError, KeyError):
                health = httpx.get(f"{stack.service_url(name)}/health", timeout=2).json()
                backlog += int(health.get("outbox_backlog", 0))
        if backlog == 0:
            time.sleep(3)  # consumers catch up with the last published events
            return
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--pause", type=float, default=4.0, help="seconds between disruptions")
    parser.add_argument("--data-dir", type=Path, default=None)
    arguments = parser.parse_args()
    data_dir = arguments.data_dir or Path(tempfile.mkdtemp(prefix="yellowcart-chaos-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(data_dir, free_port())
    began = time.monotonic()
    print(f"chaos: up on {stack.base_url}, data in {data_dir}", flush=True)
    stack.start()
    try:
        print(f"  ready after {stack.wait_ready():.1f} s", flush=True)
        flow = Flow(stack.base_url, arguments.clients)
        flow.start()
        recoveries = disrupt(stack, arguments.pause)
        time.sleep(arguments.pause)
        flow.finish(timeout_s=120)
        settle(stack)
        broken = check_invariants(stack, flow)
    finally:
        stack.stop()
    failed = [(name, o) for name, o in flow.outcomes if not o.ok]
    report(recoveries, flow, failed, broken, time.monotonic() - began)
    slow = [r for r in recoveries if not r.ok]
    problems = len(failed) + len(broken) + len(slow)
    checks = len(flow.outcomes) + len(recoveries) + 1
    print(f"chaos: {checks - problems} passed, {problems} failed")
    if not problems and arguments.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)  # kept, with its logs, when something failed
    return 1 if problems else 0


def report(
    recoveries: list[Recovery],
    flow: Flow,
    failed: list[tuple[str, Outcome]],
    broken: list[str],
    elapsed: float,
) -> None:
    line: Callable[[str], None] = lambda text: print(text, flush=True)  # noqa: E731
    line("")
    line("| disruption | recovery (s) | bound (s) | measured |")
    line("| --- | ---: | ---: | --- |")
    for r in recoveries:
        mark = "" if r.ok else " **over**"
        line(f"| {r.disruption} | {r.seconds:.2f}{mark} | {r.bound:.0f} | {r.what} |")
    line("")
    played = Counter(name for name, _ in flow.outcomes)
    line(f"scenarios played: {sum(played.values())} ({dict(played)}); failed: {len(failed)}")
    for name, outcome in failed[:10]:
        line(f"  FAILED {name} {outcome.order_id}: {outcome.detail[:300]}")
    line("invariants: " + ("all hold" if not broken else f"{len(broken)} broken"))
    for what in broken:
        line(f"  BROKEN {what}")
    line(f"elapsed {elapsed:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
