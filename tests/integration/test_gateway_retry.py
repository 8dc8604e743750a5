"""The gateway retries an idempotent request once when its upstream's port is not open yet (a
service restarting), and answers 503 with Retry-After to anything else; real sockets, a real
upstream that opens its port a moment after the request arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from operations.gateway import RETRY_AFTER_CONNECT_FAILURE_S, Gateway, RouteTable
from operations.localbroker import free_port
from tests.conftest import eventually

ROUTES = RouteTable([("/orders/{order_id}", "order", ["GET"]), ("/orders", "order", ["POST"])])


class LateUpstream:
    """An HTTP upstream whose port opens `delay_s` after `open_later` is called."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        if length:
            await reader.readexactly(length)
        self.requests.append(head.split(b"\r\n", 1)[0])
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
            b"connection: close\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    async def open_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def gateway_and_upstream() -> AsyncIterator[tuple[httpx.AsyncClient, LateUpstream]]:
    upstream = LateUpstream(free_port())
    gateway = Gateway({"order": f"http://127.0.0.1:{upstream.port}"}, ROUTES)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(gateway, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="the gateway to listen")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client, upstream
    finally:
        server.should_exit = True
        await serving
        await upstream.close()


@pytest.mark.parametrize(
    ("method", "path", "headers", "retried"),
    [
        ("GET", "/orders/o-1", {}, True),
        ("POST", "/orders", {"Idempotency-Key": "k-1"}, True),
        ("POST", "/orders", {}, False),
    ],
    ids=["get-retried", "post-with-idempotency-key-retried", "post-without-key-503"],
)
async def test_an_idempotent_request_is_retried_once_when_the_upstream_connection_fails(
    gateway_and_upstream: tuple[httpx.AsyncClient, LateUpstream],
    method: str,
    path: str,
    headers: dict[str, str],
    retried: bool,
) -> None:
    client, upstream = gateway_and_upstream
    opening = asyncio.create_task(upstream.open_later(RETRY_AFTER_CONNECT_FAILURE_S / 3))

    answer = await client.request(method, path, headers=headers, json={"a": 1})
    await opening

    if retried:
        assert answer.status_code == 200, answer.text
        assert upstream.requests == [f"{method} {path} HTTP/1.1".encode()]
    else:
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.headers["Retry-After"] == "1"
        assert upstream.requests == []


async def test_a_request_still_failing_after_its_retry_is_a_503(
    gateway_and_upstream: tuple[httpx.AsyncClient, LateUpstream],
) -> None:
    client, upstream = gateway_and_upstream

    answer = await client.get("/orders/o-1")

    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert upstream.requests == []
