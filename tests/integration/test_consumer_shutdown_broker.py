"""SIGTERM while a handler is busy: the message is not committed and is delivered again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from operations.localbroker import LocalBroker
from shared.contracts.events import OrderShipped
from shared.kernel.events.envelope import Envelope
from shared.kernel.messaging import make_producer
from shared.kernel.settings import Settings
from tests.conftest import FAST_GROUP_OPTIONS, committed_offsets, eventually

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("slow_consumer_process.py")


def shipped(version: int, tracking_number: str) -> bytes:
    return (
        Envelope.of(
            OrderShipped(order_id="o1", seller_id="s-1", tracking_number=tracking_number),
            stream_id="order-o1",
            stream_version=version,
            occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
            producer="order",
            correlation_id="o1",
            causation_id=None,
        )
        .model_dump_json()
        .encode()
    )


async def test_sigterm_during_a_slow_handler_commits_nothing_for_that_message(
    kafka: LocalBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique_name("order.events"), unique_name("g")
    producer = make_producer(Settings(broker_url=kafka.bootstrap_servers))
    await producer.start()
    try:
        fast = await producer.send_and_wait(topic, shipped(1, "fast"), key=b"o1")
        slow = await producer.send_and_wait(topic, shipped(2, "slow"), key=b"o1")
    finally:
        await producer.stop()

    log = tmp_path / "consumer.log"
    log.touch()
    stderr = tmp_path / "consumer.stderr"
    with stderr.open("wb") as stderr_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            kafka.bootstrap_servers,
            topic,
            group,
            str(log),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr_file,
        )
    try:
        await eventually(
            lambda: "start 2" in log.read_text() or process.returncode is not None,
            what="the slow handler to start",
        )
        assert process.returncode is None, stderr.read_text()[-3000:]
        assert "done 1" in log.read_text()

        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert exit_code == 0
    lines = log.read_text().splitlines()
    assert "stopped" in lines
    assert "done 2" not in lines

    committed = await committed_offsets(kafka.bootstrap_servers, group, topic)
    assert committed[slow.partition] == slow.offset  # covers the fast one, not the slow one
    assert fast.offset < slow.offset

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FAST_GROUP_OPTIONS,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
    assert (record.partition, record.offset) == (slow.partition, slow.offset)
