"""`yellowcart demo`: the marketplace's cancellation scenarios against a running system
(`--url`) or against an ephemeral one it starts itself with seconds-long payment windows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from operations.demo.client import DemoFailure
from operations.demo.scenarios import play
from operations.localbroker import free_port
from operations.supervisor import answers_health


def _wait_up(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoFailure(f"the ephemeral system exited with {process.returncode}")
        if answers_health(base_url, timeout_s=2):
            return
        time.sleep(0.5)
    raise DemoFailure("the ephemeral system did not become healthy")


def run_demo(url: str | None, console: Console) -> int:
    if url is not None:
        return 0 if play(url.rstrip("/"), console) else 1
    with tempfile.TemporaryDirectory(prefix="yellowcart-demo-") as data_dir:
        port = free_port()
        console.print(f"starting an ephemeral system (data in {data_dir}) …")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "operations",
                "up",
                "--port",
                str(port),
                "--data-dir",
                data_dir,
                "--demo-windows",
            ],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_up(base_url, process, 120)
            return 0 if play(base_url, console) else 1
        except DemoFailure as failure:
            console.print(f"[red]{failure}[/]; logs in {Path(data_dir) / 'logs'}")
            return 1
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
