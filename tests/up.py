"""`yellowcart up` as a new user runs it, for the tests that need the whole system: started as a
process on its own port and data directory, waited for, stopped the way Ctrl-C stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from operations.supervisor import answers_health, die_with_parent


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
