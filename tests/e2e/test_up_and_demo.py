"""The two commands as a new user runs them: `yellowcart up`, then `yellowcart demo` against it —
with one service killed -9 in the middle of the demo — then Ctrl-C and `up` again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from operations.localbroker import free_port
from operations.supervisor import answers_health, die_with_parent
from shared.kernel.auth import Role
from shared.kernel.clock import SystemClock
from shared.kernel.settings import Settings
from shared.kernel.storage import open_event_store

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]


def start_up(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "operations",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--demo-windows",
        ],
        stdout=(data_dir.parent / "up.out").open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "YELLOWCART_CONSUMER_SESSION_TIMEOUT_MS": "3000"},
        preexec_fn=die_with_parent,
    )


def wait_healthy(base_url: str, up: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.poll() is None, "yellowcart up exited"
        if answers_health(base_url, timeout_s=2):
            return
        time.sleep(0.5)
    pytest.fail("yellowcart up did not become healthy")


def stop_up(up: subprocess.Popen[bytes]) -> int:
    up.send_signal(signal.SIGINT)  # what Ctrl-C sends
    return up.wait(timeout=60)


async def stored_events(data_dir: Path, service: str) -> list[dict[str, object]]:
    store = await open_event_store(f"sqlite:///{data_dir}/{service.replace('-', '_')}.db")
    try:
        return [
            {"type": envelope.event_type, **envelope.data}
            async for commit in store.read_all()
            for envelope in commit.events
        ]
    finally:
        await store.close()


def test_up_serves_the_demo_through_a_service_crash_and_keeps_data_across_restarts(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    up = start_up(data_dir, port)
    try:
        wait_healthy(base_url, up)
        demo = subprocess.Popen(
            [sys.executable, "-m", "operations", "demo", "--url", base_url],
            stdout=(tmp_path / "demo.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)  # into the demo: orders placed, payments in flight (wall time, not a rule)
        state = json.loads((data_dir / "up.json").read_text())
        victim = state["services"]["payment"]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert demo.wait(timeout=240) == 0, (tmp_path / "demo.out").read_text()[-3000:]
        state = json.loads((data_dir / "up.json").read_text())
        assert state["services"]["payment"]["restarts"] >= 1
        assert state["services"]["payment"]["pid"] != victim
    finally:
        exit_code = stop_up(up)
    assert exit_code == 0

    orders = asyncio.run(stored_events(data_dir, "order"))
    payments = asyncio.run(stored_events(data_dir, "payment"))
    penalties = asyncio.run(stored_events(data_dir, "penalty"))
    placed = [e["order_id"] for e in orders if e["type"] == "OrderPlaced"]
    assert len(placed) == 5
    cancellations = Counter(e["order_id"] for e in orders if e["type"] == "OrderCancelled")
    assert set(cancellations.values()) == {1}, "no order cancelled twice"
    refunds = Counter(
        (e["order_id"], e["gateway_reference"]) for e in payments if e["type"] == "RefundIssued"
    )
    assert len(refunds) == 2 and set(refunds.values()) == {1}, "two refunds, each once"
    intents = {e["order_id"] for e in payments if e["type"] == "PaymentRequested"}
    assert len(intents) == 4, "every non-COD order has its payment intent: none lost"
    penalised = Counter(e["order_id"] for e in penalties if e["type"] == "PenaltyApplied")
    assert list(penalised.values()) == [1]

    # `up` again on the same data: the views and stores are still there
    up = start_up(data_dir, port)
    try:
        wait_healthy(base_url, up)
        token = Settings().issue_token(
            "operator-1", Role.OPERATOR, SystemClock().now(), timedelta(minutes=5)
        )
        view = httpx.get(
            f"{base_url}/orders/{placed[0]}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert view["status"] == "cancelled"
    finally:
        assert stop_up(up) == 0
