"""A minimal asyncio HTTP/1.1 keep-alive client for the load benchmark (`bench/load.py`).

The load generator shares two cores with the seven processes it measures, so every microsecond
it spends is taken from the system under test. httpx builds a request object, a header
structure and a response object per call; this client writes one pre-assembled byte string and
parses only the status line and the three headers it needs (`Content-Length`,
`Transfer-Encoding`, `Connection`), over a pool of plain `asyncio.open_connection` streams.

Connections are reused last-in first-out, so a burst's extra connections fall idle and are
dropped after `idle_timeout_s` (below uvicorn's 5 s keep-alive) instead of racing the server's
close. A request that fails on a *reused* connection before any byte of an answer arrived is
sent once more on a new connection (the server closed it while idle); that is counted in
`stale_retries`. Every request sent here is safe to repeat (orders carry an Idempotency-Key,
callbacks a gateway reference, a repeated cancel answers 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

_HEAD_END = b"\r\n\r\n"


class TransportError(Exception):
    """The exchange failed below HTTP: refused, reset, closed mid-answer, malformed answer."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A reused connection was closed by the server before it answered."""


class ConnectionPool:
    """At most `max_connections` requests in flight, each on its own keep-alive connection.

    Requests beyond that wait for a free slot; the caller's clock keeps running meanwhile, so
    the wait is part of the latency an open-loop caller measures.
    """

    def __init__(
        self, host: str, port: int, max_connections: int = 512, idle_timeout_s: float = 3.0
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._host_line = f"Host: {host}:{port}\r\n".encode()
        self.opened = 0
        self.stale_retries = 0
        self.peak_in_flight = 0
        self._in_flight = 0

    async def request(self, method: bytes, path: bytes, headers: bytes, body: bytes) -> Reply:
        """`headers` is a block of complete `Name: value\\r\\n` lines (no Host, no length)."""
        message = b"".join(
            (
                method,
                b" ",
                path,
                b" HTTP/1.1\r\n",
                self._host_line,
                headers,
                b"Content-Length: ",
                str(len(body)).encode(),
                _HEAD_END,
                body,
            )
        )
        async with self._slots:
            self._in_flight += 1
            if self._in_flight > self.peak_in_flight:
                self.peak_in_flight = self._in_flight
            try:
                connection, reused = self._take_idle(), True
                if connection is None:
                    connection, reused = await self._open(), False
                try:
                    return await self._exchange(connection, message, reused)
                except _Stale:
                    self.stale_retries += 1
                    return await self._exchange(await self._open(), message, False)
            finally:
                self._in_flight -= 1

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.idle_timeout_s and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as error:
            raise TransportError(f"connect: {type(error).__name__}: {error}") from None
        self.opened += 1
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, message: bytes, reused: bool) -> Reply:
        keep = False
        try:
            try:
                connection.writer.write(message)
                await connection.writer.drain()
                head = await connection.reader.readuntil(_HEAD_END)
            except asyncio.IncompleteReadError as error:
                if reused and not error.partial:
                    raise _Stale from None
                raise TransportError("connection closed before the answer's head") from None
            except (ConnectionResetError, BrokenPipeError) as error:
                if reused:
                    raise _Stale from None
                raise TransportError(f"{type(error).__name__}: {error}") from None
            except (OSError, asyncio.LimitOverrunError) as error:
                raise TransportError(f"{type(error).__name__}: {error}") from None
            status, length, chunked, close = _parse_head(head)
            try:
                if chunked:
                    body = await _read_chunked(connection.reader)
                elif length is not None:
                    body = await connection.reader.readexactly(length)
                else:  # no length, not chunked: the body runs to the end of the connection
                    body, close = await connection.reader.read(), True
            except (asyncio.IncompleteReadError, OSError) as error:
                raise TransportError(f"answer body cut short: {type(error).__name__}") from None
            keep = not close
            return Reply(status, body)
        finally:
            if keep:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length or None, chunked, connection: close) from a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise TransportError(f"malformed status line {status_line[:40]!r}")
    try:
        status = int(status_line[9:12])
    except ValueError:
        raise TransportError(f"malformed status line {status_line[:40]!r}") from None
    length: int | None = None
    chunked = False
    close = status_line.startswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lowered == b"connection":
            close = value.strip().lower() == b"close"
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                continue
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
