"""The fuzz stage: schemathesis against `yellowcart up`'s one base URL (`make fuzz`).

Starts the system as an operator would (`yellowcart up` on a fresh data directory), then runs
schemathesis over the gateway's merged OpenAPI document once per role (buyer, seller,
operator), with a bounded number of examples per operation. The checks are the contract we
promise callers: no 5xx for any input, every response matches its documented schema and media
type. Business refusals (a reused idempotency key, a missing note) are 4xx problems and pass.
Exit status is schemathesis's: non-zero on any failure. Not a pytest module: it is a stage of
its own in CI, after the tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from operations.localbroker import free_port
from shared.kernel.auth import Role
from shared.kernel.settings import Settings

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=25, help="per operation and role")
    arguments = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="yellowcart-fuzz-") as data_dir:
        up = subprocess.Popen(
            [str(bin_dir / "yellowcart"), "up", "--port", str(port), "--data-dir", data_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(base, up)
            settings, now = Settings(), datetime.now(UTC)
            failed = 0
            for role in Role:
                token = settings.issue_token(f"fuzz-{role.value}", role, now, timedelta(hours=1))
                print(f"--- schemathesis as {role.value} ---", flush=True)
                failed |= subprocess.call(
                    [
                        str(bin_dir / "st"),
                        "run",
                        f"{base}/openapi.json",
                        "--checks",
                        CHECKS,
                        "--phases",
                        "examples,coverage,fuzzing",
                        "--max-examples",
                        str(arguments.max_examples),
                        "--workers",
                        "1",
                        "--request-timeout",
                        "10",
                        "--header",
                        f"Authorization: Bearer {token}",
                        "--warnings",
                        "off",
                    ]
                )
            return failed
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)


def _wait_ready(base: str, up: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise SystemExit(f"yellowcart up exited with {up.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"yellowcart up was not ready within {timeout_s:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
