"""A broker outage loses no accepted command: the command is stored with its outbox entry, the
service stays up, and the relay publishes it once the broker answers again.

The outage is the broker process frozen (SIGSTOP): unreachable, its log intact, as a network
partition or a stalled Kafka looks to a client. (Killing the local broker would also lose its
in-memory log — the case `yellowcart up` handles by restarting every service, which re-emits.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from operations.localbroker import LocalBroker, create_topics
from shared.contracts.events import TOPICS
from tests.conftest import eventually, read_records
from tests.integration.conftest import (
    Tokens,
    order_body,
    running_services,
    service_settings,
    uid,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_an_order_placed_during_a_broker_outage_is_published_when_it_returns(
    tmp_path: Path, tokens: Tokens
) -> None:
    broker = await LocalBroker().start()
    await create_topics(broker.bootstrap_servers, TOPICS)
    settings = service_settings(broker, tmp_path, kafka_request_timeout_ms=2000)
    try:
        async with running_services(settings, ["order"], consumers=False) as services:
            client = services["order"].client
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)

            placed = await client.post(
                "/orders", json=order_body(uid("shop")), headers=tokens.buyer("b-1")
            )
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["order_id"]
            health = (await client.get("/health")).json()
            assert health["status"] == "ok" and health["outbox_backlog"] == 1
            relay = services["order"].app.state.runtime.relay
            await eventually(lambda: relay.metrics.failures > 0, timeout_s=30, what="a failed send")
            assert (await client.get("/health")).json()["outbox_backlog"] == 1

            os.kill(broker.pid, signal.SIGCONT)

            async def backlog_drained() -> bool:
                return (await client.get("/health")).json()["outbox_backlog"] == 0

            await eventually(backlog_drained, timeout_s=60)
            records = await read_records(broker.bootstrap_servers, "order.events", 1, settle_s=1)
            assert [json.loads(r.value)["data"]["order_id"] for r in records] == [order_id]
    finally:
        await broker.stop()
