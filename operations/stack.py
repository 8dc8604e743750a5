"""`yellowcart up`: the whole system on its embedded default, as separate processes.

The local broker keeps messages in memory, so a new `up` starts with an empty broker while the
SQLite stores under the data directory keep every event. Whenever the broker is new — at the
start of `up`, and after the broker died and was restarted on its port — every service is
(re)started with `serve --republish-on-start`: it serves at once and re-emits its stored
commits in the background, in acknowledged batches; consumers deduplicate (causation ids in
the stores, stream versions in the views), so nothing is lost and nothing happens twice. A
service that crashes while the broker lives is restarted without any re-send: the broker
still holds what it published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import uvicorn
from rich.console import Console

from operations.catalog import SERVICES
from operations.checkpoint import generate_key
from operations.gateway import create_gateway
from operations.identities import EXAMPLE_USERS
from operations.localbroker import LocalBroker, LocalBrokerError, create_topics, free_port
from operations.supervisor import Child, Supervisor, answers_health
from shared.contracts.events import CHECKPOINT_TOPIC, TOPICS
from shared.kernel.clock import SystemClock
from shared.kernel.settings import Settings

log = logging.getLogger(__name__)
SHORT_WINDOW = "PT4S"
DEMO_WINDOWS_ENV = {
    # e-wallets get a few seconds so the deadline scenarios finish quickly; bank transfers keep
    # a long window so the paid scenarios are never raced by their own deadline
    "YELLOWCART_POLICY__PAYMENT__WINDOWS": json.dumps(
        {"ovo": SHORT_WINDOW, "gopay": SHORT_WINDOW, "dana": SHORT_WINDOW, "bank_transfer": "PT1H"}
    ),
    "YELLOWCART_POLICY__DISPUTE__SELLER_RESPONSE_WINDOW": "PT1H",
}


REPUBLISH = "--republish-on-start"
# A killed service's consumers hold their partitions until their session times out: 3 s
# (Tansu answers a join after about half of it) keeps a restart's rebalance short.
SESSION_TIMEOUT_MS = "3000"


STACK_TOPICS = [*TOPICS, *(f"{t}.dlq" for t in TOPICS), CHECKPOINT_TOPIC]
EMBEDDED_CHECKPOINT_INTERVAL_S = 60.0
DEMO_CHECKPOINT_INTERVAL_S = 2.0


def checkpoint_env(
    settings: Settings, data_dir: Path, interval_s: float = EMBEDDED_CHECKPOINT_INTERVAL_S
) -> dict[str, str]:
    """The embedded run seals checkpoints every minute (`--demo-windows`: every 2 s) with a key
    of its own, made once in the data directory (`checkpoint-key.pem`, and
    `checkpoint-key.pub.pem` for the auditor and the console); a key or an interval set in the
    environment wins."""
    if settings.checkpoint_key:
        return {}
    private, public = data_dir / "checkpoint-key.pem", data_dir / "checkpoint-key.pub.pem"
    if not private.exists():
        generate_key(private, public)
    interval = settings.checkpoint_interval_s or interval_s
    return {
        "YELLOWCART_CHECKPOINT_KEY_FILE": str(private),
        "YELLOWCART_CHECKPOINT_INTERVAL_S": str(interval),
    }


def _children(
    data_dir: Path, broker_url: str, ports: Mapping[str, int], extra_env: Mapping[str, str]
) -> list[Child]:
    env = {
        "YELLOWCART_BROKER_URL": broker_url,
        "YELLOWCART_KAFKA_IDEMPOTENCE": "false",
        "YELLOWCART_DATA_DIR": str(data_dir),
        "YELLOWCART_ENVIRONMENT": "embedded",
        "YELLOWCART_CONSUMER_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
        **extra_env,
    }
    return [
        Child(
            name=name,
            argv=[
                sys.executable,
                "-m",
                "operations",
                "serve",
                name,
                "--port",
                str(ports[name]),
                REPUBLISH,
            ],
            env={**env, "YELLOWCART_INSTANCE_ID": f"embedded-{name}"},
            log_path=data_dir / "logs" / f"{name}.log",
        )
        for name in SERVICES
    ]


def _republish_on_next_start(supervisor: Supervisor, republish: bool) -> None:
    """Whether the children's next start re-emits their stores (only to a new broker)."""
    for child in supervisor.children:
        argv = [arg for arg in child.argv if arg != REPUBLISH]
        child.argv = [*argv, REPUBLISH] if republish else argv


def _write_state(
    path: Path, base_url: str, broker: LocalBroker, sup: Supervisor, ports: Mapping[str, int]
) -> None:
    state = {
        "base_url": base_url,
        "broker": broker.bootstrap_servers,
        "broker_pid": broker.pid,
        "pid": os.getpid(),
        "services": {
            child.name: {
                "port": ports[child.name],
                "pid": child.process.pid if child.process else None,
                "restarts": child.restarts,
            }
            for child in sup.children
        },
    }
    path.write_text(json.dumps(state, indent=2))


def _wait_healthy(ports: Mapping[str, int], timeout_s: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout_s
    pending = dict(ports)
    while pending and time.monotonic() < deadline and not stop.is_set():
        for name, port in list(pending.items()):
            if answers_health(f"http://127.0.0.1:{port}"):
                del pending[name]
        time.sleep(0.2)
    return not pending


def _restart_broker(broker: LocalBroker, supervisor: Supervisor) -> None:
    """A new, empty broker on the same port; the services restart and re-send their stores
    while serving (their consumers would otherwise wait on offsets the new broker lacks)."""
    started = time.monotonic()
    grace, supervisor.grace_s = supervisor.grace_s, 2.0  # they cannot flush to a dead broker
    supervisor.stop()
    supervisor.grace_s = grace
    while True:
        try:
            broker.start_sync()
            break
        except LocalBrokerError:  # the port may still be held for a moment
            time.sleep(0.5)
    asyncio.run(create_topics(broker.bootstrap_servers, STACK_TOPICS))
    _republish_on_next_start(supervisor, True)
    supervisor.start()
    _republish_on_next_start(supervisor, False)
    log.warning("broker restarted with every service in %.1f s", time.monotonic() - started)


def _banner(
    console: Console, base_url: str, settings: Settings, broker: str, ports: Mapping[str, int]
) -> None:
    now = SystemClock().now()
    console.print(f"\n[bold green]yellowcart is up[/] at [bold]{base_url}[/]")
    console.print(f"  console:    {base_url}/console")
    console.print(f"  API docs:   {base_url}/docs")
    console.print(f"  health:     {base_url}/health")
    console.print(f"  metrics:    {base_url}/metrics (the gateway's own)")
    console.print("  each service's own /metrics, /health/live, /health/ready (up.json has them):")
    for name, port in ports.items():
        console.print(f"    {name:<15}http://127.0.0.1:{port}/metrics")
    console.print(f"  broker:     {broker} (local, in memory)")
    console.print(f"  data:       {Path(settings.data_dir).resolve()}")
    if not settings.checkpoint_key:
        public = Path(settings.data_dir).resolve() / "checkpoint-key.pub.pem"
        console.print(f"  checkpoints: sealed onto {CHECKPOINT_TOPIC}; verify with {public}")
    console.print("  example tokens (Authorization: Bearer <token>):")
    for role, sub in EXAMPLE_USERS:
        token = settings.issue_token(sub, role, now, timedelta(days=30))
        console.print(f"    {role.value:<9}{sub:<12}{token}", soft_wrap=True)
    console.print("  Ctrl-C stops everything; data stays in the data directory.\n")


def _stop_requested(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stack(settings: Settings, console: Console, *, demo_windows: bool = False) -> int:
    """Run the stack on `settings.http_port` with its files under `settings.data_dir`."""
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = settings.http_port
    extra_env = {
        **(DEMO_WINDOWS_ENV if demo_windows else {}),
        **checkpoint_env(
            settings,
            data_dir,
            DEMO_CHECKPOINT_INTERVAL_S if demo_windows else EMBEDDED_CHECKPOINT_INTERVAL_S,
        ),
    }
    broker = LocalBroker().start_sync()
    asyncio.run(create_topics(broker.bootstrap_servers, STACK_TOPICS))
    ports = {name: free_port() for name in SERVICES}
    supervisor = Supervisor(_children(data_dir, broker.bootstrap_servers, ports, extra_env))
    supervisor.start()
    _republish_on_next_start(supervisor, False)
    base_url = f"http://127.0.0.1:{port}"
    state_file = data_dir / "up.json"
    stop = threading.Event()

    def supervise() -> None:
        if _wait_healthy(ports, 120, stop):
            _banner(console, base_url, settings, broker.bootstrap_servers, ports)
        else:
            console.print(f"[red]some services did not become healthy; see {data_dir}/logs[/]")
        while not stop.wait(0.2):
            if not broker.running:
                console.print(
                    "[yellow]the local broker died; restarting it on its port, and every "
                    "service with a re-send of its store[/]"
                )
                _restart_broker(broker, supervisor)
            for name in supervisor.check():
                console.print(f"[yellow]{name} exited and was restarted[/]")
            _write_state(state_file, base_url, broker, supervisor, ports)

    _write_state(state_file, base_url, broker, supervisor, ports)
    watcher = threading.Thread(target=supervise, name="supervisor", daemon=True)
    watcher.start()
    upstreams = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
    try:
        server = uvicorn.Server(
            uvicorn.Config(
                create_gateway(
                    upstreams,
                    # the console reads dead letters from the local broker
                    settings=settings.model_copy(update={"broker_url": broker.bootstrap_servers}),
                ),
                host=settings.http_host,
                port=port,
                log_level="warning",
            )
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; SIGTERM's default
        # action would end this process before the services and the broker are stopped
        signal.signal(signal.SIGTERM, _stop_requested)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        return 0 if server.started else 1
    finally:
        stop.set()
        watcher.join(timeout=5)
        console.print("stopping services …")
        supervisor.stop()
        broker.stop_sync()
        state_file.unlink(missing_ok=True)
