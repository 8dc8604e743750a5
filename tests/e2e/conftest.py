"""Services as separate OS processes, as in deployment, on a broker of their own.

Each module gets a fresh local broker (the services' topic and group names are fixed, so
sharing the session broker would mix their histories); each test gets fresh SQLite files.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from operations.localbroker import LocalBroker, create_topics, free_port
from operations.supervisor import answers_health, die_with_parent
from shared.contracts.events import TOPICS
from tests.conftest import read_records

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


@pytest.fixture(scope="module")
def e2e_broker() -> Iterator[LocalBroker]:
    broker = LocalBroker()
    broker.start_sync()
    asyncio.run(create_topics(broker.bootstrap_servers, [*TOPICS, *(f"{t}.dlq" for t in TOPICS)]))
    try:
        yield broker
    finally:
        broker.stop_sync()


class Processes:
    """Starts `yellowcart serve <service>` (and a gateway) and stops them all at the end."""

    def __init__(self, broker: LocalBroker, data_dir: Path, env: Mapping[str, str]) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "YELLOWCART_BROKER_URL": broker.bootstrap_servers,
            "YELLOWCART_DATA_DIR": str(data_dir),
            "YELLOWCART_CONSUMER_SESSION_TIMEOUT_MS": "2000",
            **env,
        }
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.data_dir / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "operations", *argv],
            env={**self.env, "YELLOWCART_INSTANCE_ID": f"e2e-{name}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def start(self, *services: str) -> str:
        """Start the services and a gateway in front of them; returns the gateway's URL."""
        for name in services:
            self.ports[name] = free_port()
            self._spawn(name, ["serve", name, "--port", str(self.ports[name])])
        gateway_port = free_port()
        upstreams = [f"--upstream={n}=http://127.0.0.1:{self.ports[n]}" for n in services]
        self._spawn("gateway", ["gateway", *upstreams, "--port", str(gateway_port)])
        for name in services:
            self.wait_healthy(f"http://127.0.0.1:{self.ports[name]}", name)
        # the services answer within seconds now: the gateway may still be starting
        self.wait_healthy(f"http://127.0.0.1:{gateway_port}", "gateway")
        return f"http://127.0.0.1:{gateway_port}"

    def wait_healthy(self, url: str, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running[name].poll() is not None:
                pytest.fail(f"{name} exited:\n{self.log(name)}")
            if answers_health(url):
                return
            time.sleep(0.2)
        pytest.fail(f"{name} did not become healthy:\n{self.log(name)}")

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes_factory(
    e2e_broker: LocalBroker, tmp_path: Path
) -> Iterator[Callable[..., Processes]]:
    started: list[Processes] = []

    def make(env: Mapping[str, str] | None = None) -> Processes:
        processes = Processes(e2e_broker, tmp_path, env or {})
        started.append(processes)
        return processes

    yield make
    for processes in started:
        processes.stop_all()


async def events_by_order(
    broker: LocalBroker, topic: str, count: int
) -> dict[str, list[dict[str, Any]]]:
    """Read `count` records of `topic` (and a second more, to catch extras), by order."""
    records = await read_records(broker.bootstrap_servers, topic, count, timeout_s=30, settle_s=1)
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        envelope = json.loads(record.value)
        data = envelope["data"]
        key = ("penalty" in topic and data["seller_id"]) or data["order_id"]
        assert record.key.decode() == key, "events are keyed by order (penalties: by seller)"
        by_order[data.get("order_id", f"seller:{data.get('seller_id')}")].append(envelope)
    return by_order
