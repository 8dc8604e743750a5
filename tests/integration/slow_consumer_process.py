"""A consumer-group member in its own process, for the shutdown test.

Usage: python slow_consumer_process.py <bootstrap> <topic> <group> <log file>

Events whose `tracking_number` is "slow" make the handler sleep for a minute; every other
event is handled at once. The log file gets a line per handler start and end. SIGTERM stops
the broker the way a service does (FastStream's graceful timeout, then cancellation).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from shared.contracts.events import OrderShipped, default_registry
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.messaging import make_kafka_broker, subscribe_events
from shared.kernel.settings import Settings


async def main(bootstrap: str, topic: str, group: str, log_path: Path) -> None:
    def note(line: str) -> None:
        with log_path.open("a") as log:
            log.write(line + "\n")

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        assert isinstance(event, OrderShipped)
        note(f"start {envelope.stream_version}")
        if event.tracking_number == "slow":
            await asyncio.sleep(60)
        note(f"done {envelope.stream_version}")

    broker = make_kafka_broker(
        Settings(broker_url=bootstrap, kafka_idempotence=False), graceful_timeout_s=0.5
    )
    subscribe_events(
        broker,
        topic,
        group_id=group,
        handler=handle,
        registry=default_registry(),
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await broker.start()
    note("ready")
    await stop.wait()
    await broker.stop()
    note("stopped")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
