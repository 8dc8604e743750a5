"""Start and stop `yellowcart up` as a user does, and sample its processes through /proc.

`up` runs the gateway in its own process, starts the Tansu broker and the four services as its
children, and writes `<data-dir>/up.json` with the services' ports and PIDs. The broker's PID
is not in that file: it is the child of `up` whose command line mentions `tansu`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICE_NAMES = ("order", "payment", "seller-dispute", "penalty")
# What a failed start caused by a half-finished edit elsewhere in the repository looks like.
IMPORT_PROBLEMS = ("ImportError", "ModuleNotFoundError", "SyntaxError", "IndentationError")


class StartFailed(Exception):
    def __init__(self, message: str, import_problem: bool) -> None:
        super().__init__(message)
        self.import_problem = import_problem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def yellowcart_command() -> list[str]:
    """The console script next to this interpreter, else `python -m operations`."""
    script = Path(sys.executable).parent / "yellowcart"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "operations"]


@dataclass
class System:
    process: subprocess.Popen[bytes]
    data_dir: Path
    base_url: str
    port: int
    pids: dict[str, int] = field(default_factory=dict)  # gateway, broker, and each service
    startup_s: float = 0.0
    start_attempts: list[str] = field(default_factory=list)

    def service_restarts(self) -> dict[str, int]:
        try:
            state = json.loads((self.data_dir / "up.json").read_text())
        except (OSError, ValueError):
            return {}
        return {name: int(entry.get("restarts", 0)) for name, entry in state["services"].items()}

    def stop(self, timeout_s: float = 45.0) -> int | None:
        """SIGTERM to `up` (it stops the services and the broker itself), then wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                # `up` runs in a session of its own that this program created: end that group.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_system(data_dir: Path, health_timeout_s: float = 120.0) -> System:
    """Start `up` on a free port and return once `GET /health` answers 200."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = (data_dir / "up.out").open("ab")
    began = time.monotonic()
    process = subprocess.Popen(
        [*yellowcart_command(), "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    system = System(process=process, data_dir=data_dir, base_url=base_url, port=port)
    deadline = began + health_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _start_failure(system, f"`yellowcart up` exited with {process.returncode}")
        if _healthy(base_url):
            system.startup_s = time.monotonic() - began
            system.pids = _pids(system)
            return system
        time.sleep(0.25)
    failure = _start_failure(system, f"not healthy within {health_timeout_s:.0f} s")
    system.stop()
    raise failure


def start_with_retries(data_dir: Path, retry_for_s: float = 600.0) -> System:
    """Retry a start that failed on an import problem (a concurrent edit) for up to 10 min."""
    attempts: list[str] = []
    deadline = time.monotonic() + retry_for_s
    while True:
        try:
            system = start_system(data_dir)
            system.start_attempts = attempts
            return system
        except StartFailed as failure:
            attempts.append(str(failure))
            if not failure.import_problem or time.monotonic() > deadline:
                raise
            print(f"  start failed on an import problem; retrying in 60 s: {failure}", flush=True)
            time.sleep(60)
            for db in data_dir.glob("*.db*"):
                db.unlink()


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start_failure(system: System, reason: str) -> StartFailed:
    texts = []
    for path in [system.data_dir / "up.out", *sorted((system.data_dir / "logs").glob("*.log"))]:
        with contextlib.suppress(OSError):
            texts.append(path.read_text(errors="replace")[-4000:])
    text = "\n".join(texts)
    import_problem = any(marker in text for marker in IMPORT_PROBLEMS)
    last_lines = " | ".join(line for line in text.strip().splitlines()[-3:])
    return StartFailed(f"{reason}: {last_lines[-600:]}", import_problem)


def _pids(system: System) -> dict[str, int]:
    state = json.loads((system.data_dir / "up.json").read_text())
    pids = {"gateway": int(state["pid"])}
    broker = find_child(int(state["pid"]), "tansu")
    if broker is not None:
        pids["broker"] = broker
    for name in SERVICE_NAMES:
        pid = state["services"].get(name, {}).get("pid")
        if pid is not None:
            pids[name] = int(pid)
    return pids


def find_child(parent: int, cmdline_contains: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == parent and cmdline_contains in (entry / "cmdline").read_text():
                return int(entry.name)
        except (OSError, ValueError):
            continue
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the command: state(3) ppid(4) … utime(14) stime(15); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the process's lifetime peak resident set."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample_cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}
