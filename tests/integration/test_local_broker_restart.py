"""A local broker that died (SIGKILL) can be started again on its port: what `up` does when
its broker dies (it used to refuse with "the local broker is already started")."""

from __future__ import annotations

import os
import signal

import pytest

from operations.localbroker import LocalBroker
from tests.conftest import eventually

pytestmark = [pytest.mark.broker]


async def test_a_killed_local_broker_starts_again_on_the_same_port() -> None:
    broker = await LocalBroker().start()
    try:
        port, pid = broker.port, broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not broker.running, what="the broker to die")

        await broker.start()

        assert broker.running and broker.port == port and broker.pid != pid
    finally:
        await broker.stop()
