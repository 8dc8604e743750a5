"""Keeps the embedded stack's processes alive: start, restart on crash, stop cleanly.

Used by `yellowcart up`. Each child is a separate OS process (as in deployment); one that
exits while the supervisor is running is restarted with a growing delay; `stop` sends SIGTERM
to all and kills the ones that do not leave within the grace period.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (Linux): receive SIGTERM when the parent dies, even by SIGKILL,
    so a killed `yellowcart up` leaves no orphaned service or broker behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        output = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(self.argv),
            env={**os.environ, **self.env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        output.close()
        self.started_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def answers_health(base_url: str, timeout_s: float = 1.0) -> bool:
    """Whether `GET <base_url>/health` answers 200 (a process that is up and ready)."""
    try:
        return httpx.get(f"{base_url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class Supervisor:
    def __init__(self, children: Sequence[Child], grace_s: float = 10.0) -> None:
        self.children = list(children)
        self.grace_s = grace_s

    def start(self) -> None:
        for child in self.children:
            child.start()
            log.info("started %s (pid %s)", child.name, child.process and child.process.pid)

    def check(self) -> list[str]:
        """Restart children that died; returns the names restarted in this round."""
        restarted = []
        now = time.monotonic()
        for child in self.children:
            if child.running or now < child.next_start:
                continue
            if child.process is not None and child.next_start == 0.0:
                code = child.process.returncode
                lived = now - child.started_at
                delay = 0.5 if lived > 30 else min(10.0, 0.5 * 2 ** min(child.restarts, 5))
                log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
                child.next_start = now + delay
                continue
            child.restarts += 1
            child.next_start = 0.0
            child.start()
            restarted.append(child.name)
        return restarted

    def stop(self) -> None:
        for child in self.children:
            if child.running and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
