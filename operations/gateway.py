"""One base URL for the embedded run: a small reverse proxy routing paths to the services.

In containers each service serves its own routes behind the operator's ingress; `yellowcart
up` puts this proxy in front of the four local processes so every public route answers
on one address, and merges their OpenAPI documents into one.

The proxy is on every request's path, so it is kept lean: proxied paths are handled as plain
ASGI (no framework routing or request objects) and forwarded with aiohttp's client (a C HTTP
parser and a keep-alive pool per service); only the gateway's own routes (`/health`,
`/openapi.json`, `/docs`) go through FastAPI. The first version forwarded with httpx from a
FastAPI catch-all route: under load its connection pool scanned every queued request against
every connection on each completion, and it cost about 2.6 ms of CPU per request.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from operations.console import create_console, is_console_path
from shared.kernel.http import problem_response
from shared.kernel.settings import Settings

# First match wins: the dispute routes under /orders/{id}/ must come before the order catch-all.
ROUTES: tuple[tuple[str, str], ...] = (
    (r"^/orders/[^/]+/(cancellation-requests|seller-cancellations)$", "seller-dispute"),
    (r"^/(cancellation-requests|seller-cancellations)(/|$)", "seller-dispute"),
    (r"^/cases(/|$)", "seller-dispute"),
    (r"^/payments(/|$)", "payment"),
    (r"^/sellers(/|$)", "penalty"),
    (r"^/orders(/|$)", "order"),
)
_COMPILED = tuple((re.compile(pattern), service) for pattern, service in ROUTES)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}
_NOT_FORWARDED_BACK = _HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}
OWN_ROUTES = frozenset({"/health", "/openapi.json", "/docs"})
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=30)


def service_for(path: str) -> str | None:
    for pattern, service in _COMPILED:
        if pattern.search(path):
            return service
    return None


class Gateway:
    """The ASGI app: proxied paths straight to their service, the gateway's own to FastAPI."""

    def __init__(self, upstreams: Mapping[str, str], settings: Settings | None = None) -> None:
        """`upstreams` maps a service name to its base URL (http://127.0.0.1:8001 …)."""
        self.upstreams = dict(upstreams)
        self.session: aiohttp.ClientSession | None = None
        self.own: ASGIApp = _own_routes(self)
        self.console: ASGIApp = create_console(self, settings or Settings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OWN_ROUTES:
            await self.own(scope, receive, send)
            return
        if is_console_path(scope["path"]):
            await self.console(scope, receive, send)
            return
        service = service_for(scope["path"])
        if service is None or service not in self.upstreams:
            path = scope["path"]
            await problem_response(404, "Not found", f"no route {path}", path)(scope, receive, send)
            return
        await self._forward(scope, receive, send, service)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, service: str) -> None:
        assert self.session is not None, "the gateway's lifespan has not started"
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = self.upstreams[service] + target.decode("latin-1")
        if query:
            url += "?" + query.decode("latin-1")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        try:
            async with self.session.request(
                scope["method"],
                URL(url, encoded=True),
                data=bytes(body),
                headers=headers,
                allow_redirects=False,
            ) as answer:
                content = await answer.read()
                status = answer.status
                out = [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in answer.headers.items()
                    if name.lower() not in _NOT_FORWARDED_BACK
                ]
        except (TimeoutError, aiohttp.ClientError):
            path = scope["path"]
            unavailable = problem_response(
                503,
                "Service unavailable",
                f"the {service} service is not answering; nothing was done by this gateway",
                path,
                headers={"Retry-After": "1"},
            )
            await unavailable(scope, receive, send)
            return
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": content})


def create_gateway(upstreams: Mapping[str, str], settings: Settings | None = None) -> Gateway:
    return Gateway(upstreams, settings)


def _own_routes(gateway: Gateway) -> FastAPI:
    upstreams = gateway.upstreams

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=None)
        gateway.session = aiohttp.ClientSession(
            connector=connector, timeout=UPSTREAM_TIMEOUT, auto_decompress=False
        )
        yield
        await gateway.session.close()

    app = FastAPI(title="yellowcart", docs_url=None, openapi_url=None, lifespan=lifespan)

    async def get_json(url: str, timeout_s: float) -> tuple[int, Any]:
        assert gateway.session is not None
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with gateway.session.get(url, timeout=timeout) as answer:
            return answer.status, await answer.json(content_type=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        states: dict[str, Any] = {}
        for name, base in upstreams.items():
            try:
                status, body = await get_json(f"{base}/health", 2)
                states[name] = body if status == 200 else status
            except (TimeoutError, aiohttp.ClientError, ValueError) as error:
                states[name] = f"down: {type(error).__name__}"
        ready = all(isinstance(state, dict) for state in states.values())
        return JSONResponse(
            {"status": "ok" if ready else "degraded", "services": states},
            status_code=200 if ready else 503,
        )

    @app.get("/openapi.json")
    async def openapi() -> JSONResponse:
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "yellowcart", "version": "0.1.0"},
            "paths": {},
            "components": {"schemas": {}, "securitySchemes": {}},
        }
        for base in upstreams.values():
            _, document = await get_json(f"{base}/openapi.json", 10)
            merged["paths"].update(document.get("paths", {}))
            for section, values in document.get("components", {}).items():
                merged["components"].setdefault(section, {}).update(values)
        return JSONResponse(merged)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="yellowcart API")

    return app
