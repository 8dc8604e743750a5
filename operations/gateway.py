"""One base URL for the embedded run: a small, strict reverse proxy in front of the services.

`yellowcart up` (and `yellowcart gateway`) put it in front of the four service processes so
every public route answers on one address and the four OpenAPI documents read as one. In
container deployments a well-kept proxy takes this place (docs/ARCHITECTURE.md says why); its
route table is generated from the same `RouteTable`.

What it guarantees, whatever a client sends:
- only published routes are reached: the table is built from the services' own routers, and
  a path is checked before routing — control characters, encoded separators (`%2F`, `%5C`)
  and dot segments are refused with 400, an unknown path is 404, a known path with another
  method 405; the services' private routes (`/health`, `/metrics`) are not published;
- every error the gateway raises itself is `application/problem+json`; an upstream that does
  not answer is 503 with `Retry-After`; nothing the gateway does ends in a 5xx of its own
  making, so the client's keep-alive connection stays usable;
- an upstream redirect never carries an internal address out;
- bodies stream both ways (small ones go in one piece, which is the common case);
- upstreams learn the client (`X-Forwarded-For`, `-Proto`, `-Host`, set here, never taken from
  the client) and every request carries an `X-Request-Id`.

The proxy is on every request's path, so it is kept lean: proxied paths are plain ASGI (no
framework routing or request objects) forwarded with aiohttp's client (a C HTTP parser and a
keep-alive pool per service); only the gateway's own routes (`/health`, `/metrics`,
`/openapi.json`, `/docs`) go through FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yarl import URL

from operations.console import create_console, is_console_path
from shared.kernel.http import install_problem_handlers, problem_response
from shared.kernel.settings import Settings

log = logging.getLogger("yellowcart.gateway")

PRIVATE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics", "/openapi.json"})
"""Each service's own operational routes: reached on its own port, never through the gateway."""
OWN_ROUTES = frozenset(
    {"/health", "/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"}
)
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
    b"forwarded",
}
_NOT_FORWARDED_BACK = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-encoding",
    "date",
    "server",
}
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|00)", re.IGNORECASE)
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=2)
ONE_PIECE_BYTES = 256 * 1024
RETRY_AFTER_CONNECT_FAILURE_S = 0.5  # a restarting service opens its port within seconds
"""Bodies up to this size are passed in one piece; larger ones stream chunk by chunk."""


@dataclass(frozen=True)
class Route:
    template: str
    service: str
    methods: frozenset[str]
    pattern: re.Pattern[str]


class RouteTable:
    """The published routes of every service, matched by template; first match wins, so a
    literal segment beats a parameter (`/seller-cancellations/{id}/approve` before …)."""

    def __init__(self, routes: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        merged: dict[tuple[str, str], set[str]] = {}
        for template, service, methods in routes:
            if template in PRIVATE_PATHS:
                continue
            merged.setdefault((template, service), set()).update(methods)
        ordered = sorted(merged.items(), key=lambda item: _specificity(item[0][0]))
        self.routes = tuple(
            Route(template, service, frozenset(methods), _compile(template))
            for (template, service), methods in ordered
        )

    @classmethod
    def of_services(cls, routers: Mapping[str, Iterable[Any]]) -> RouteTable:
        """From each service's FastAPI routers: what a service serves is what is published."""
        return cls(
            (route.path, service, route.methods or ())
            for service, service_routers in routers.items()
            for router in service_routers
            for route in router.routes
            if isinstance(route, APIRoute)
        )

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if route.pattern.match(path):
                return route
        return None


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    body = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(f"^{body}$")


def _specificity(template: str) -> tuple[int, ...]:
    """Literal segments sort before parameters at the first place two templates differ."""
    return tuple(1 if segment.startswith("{") else 0 for segment in template.split("/"))


def refusal(path: str, raw_path: bytes) -> str | None:
    """Why a path is refused before routing, or None. `path` is decoded, `raw_path` as sent."""
    if _ENCODED_SEPARATOR.search(raw_path):
        return "encoded path separators (%2F, %5C) and NUL are not allowed in a path"
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in path):
        return "control characters are not allowed in a path"
    if "\\" in path:
        return "backslashes are not allowed in a path"
    if any(segment in (".", "..") for segment in path.split("/")):
        return "dot segments (`.` and `..`) are not allowed in a path"
    return None


class GatewayMetrics:
    """The gateway's own Prometheus metrics (each service serves its own on its port)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.duration = Histogram(
            "yellowcart_gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            ["service", "route", "method", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.refused = Counter(
            "yellowcart_gateway_refused_requests_total",
            "Requests the gateway answered itself without reaching a service, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.upstream_failures = Counter(
            "yellowcart_gateway_upstream_failures_total",
            "Requests whose service did not answer (503 to the client), by service",
            ["service"],
            registry=self.registry,
        )


class Gateway:
    """The ASGI app: published paths to their service, the gateway's own routes to FastAPI."""

    def __init__(
        self, upstreams: Mapping[str, str], routes: RouteTable, settings: Settings | None = None
    ) -> None:
        """`upstreams` maps a service name to its base URL (http://127.0.0.1:8001 …)."""
        self.upstreams = {name: base.rstrip("/") for name, base in upstreams.items()}
        self.routes = routes
        self.metrics = GatewayMetrics()
        self.session: aiohttp.ClientSession | None = None
        self.own: ASGIApp = _own_routes(self)
        self.console: ASGIApp = create_console(self, settings or Settings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.own(scope, receive, send)
            return
        path: str = scope["path"]
        reason = refusal(path, scope.get("raw_path") or path.encode("utf-8", "replace"))
        if reason is not None:
            self.metrics.refused.labels("bad_path").inc()
            await problem_response(400, "Bad request", reason)(scope, receive, send)
            return
        if path in OWN_ROUTES:
            await self.own(scope, receive, send)
            return
        if is_console_path(path):
            await self.console(scope, receive, send)
            return
        route = self.routes.match(path)
        if route is None or route.service not in self.upstreams:
            self.metrics.refused.labels("unknown_route").inc()
            await problem_response(404, "Not found", "no such route", path)(scope, receive, send)
            return
        if scope["method"] not in route.methods:
            self.metrics.refused.labels("method_not_allowed").inc()
            allowed = ", ".join(sorted(route.methods))
            answer = problem_response(
                405,
                "Method not allowed",
                f"{route.template} answers {allowed}",
                path,
                headers={"Allow": allowed},
            )
            await answer(scope, receive, send)
            return
        started = time.perf_counter()
        status = await self._forward(scope, receive, send, route)
        self.metrics.duration.labels(
            route.service, route.template, scope["method"], str(status)
        ).observe(time.perf_counter() - started)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, route: Route) -> int:
        assert self.session is not None, "the gateway's lifespan has not started"
        service = route.service
        base = self.upstreams[service]
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"")
        url = base + target + ("?" + query.decode("latin-1") if query else "")
        headers, request_id = _upstream_headers(scope)
        first = await receive()
        body: bytes | AsyncIterator[bytes] = first.get("body", b"")
        if first.get("more_body", False):
            body = _rest_of_body(first.get("body", b""), receive)
        try:
            async with await self._request(scope["method"], url, body, headers) as answer:
                out = [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in answer.headers.items()
                    if name.lower() not in _NOT_FORWARDED_BACK
                ]
                out = _without_internal_locations(out, base)
                out.append((b"x-request-id", request_id.encode()))
                length = answer.content_length
                if length is not None and length <= ONE_PIECE_BYTES:
                    content = await answer.read()
                    out.append((b"content-length", str(len(content)).encode()))
                    await send(
                        {"type": "http.response.start", "status": answer.status, "headers": out}
                    )
                    await send({"type": "http.response.body", "body": content})
                    return answer.status
                if length is not None:
                    out.append((b"content-length", str(length).encode()))
                await send({"type": "http.response.start", "status": answer.status, "headers": out})
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return answer.status
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            self.metrics.upstream_failures.labels(service).inc()
            log.warning("upstream %s failed for %s: %r", service, scope["path"], error)
            unavailable = problem_response(
                503,
                "Service unavailable",
                f"the {service} service is not answering; retry shortly",
                scope["path"],
                headers={"Retry-After": "1", "X-Request-Id": request_id},
            )
            await unavailable(scope, receive, send)
            return 503

    # --- one retry of an idempotent request whose upstream connection failed -----------------

    async def _request(
        self,
        method: str,
        url: str,
        body: bytes | AsyncIterator[bytes],
        headers: list[tuple[str, str]],
    ) -> aiohttp.ClientResponse:
        """Send the request upstream. When the connection cannot even be made (nothing reached
        the service: it is restarting) and the request is idempotent — a GET or HEAD, or a
        request with an `Idempotency-Key` and a body already read — it is tried once more
        after a short wait; otherwise, or if that fails too, the caller answers 503."""
        assert self.session is not None
        try:
            return await self._send(method, url, body, headers)
        except aiohttp.ClientConnectorError:
            if not _idempotent(method, body, headers):
                raise
            await asyncio.sleep(RETRY_AFTER_CONNECT_FAILURE_S)
            return await self._send(method, url, body, headers)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | AsyncIterator[bytes],
        headers: list[tuple[str, str]],
    ) -> aiohttp.ClientResponse:
        assert self.session is not None
        return await self.session.request(
            method, URL(url, encoded=True), data=body, headers=headers, allow_redirects=False
        )


def _idempotent(
    method: str, body: bytes | AsyncIterator[bytes], headers: list[tuple[str, str]]
) -> bool:
    if method in ("GET", "HEAD"):
        return True
    keyed = any(name.lower() == "idempotency-key" for name, _ in headers)
    return keyed and isinstance(body, bytes)


async def _rest_of_body(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        message: Message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _upstream_headers(scope: Scope) -> tuple[list[tuple[str, str]], str]:
    """The client's end-to-end headers plus the forwarding headers, and the request id."""
    headers: list[tuple[str, str]] = []
    request_id: str | None = None
    host = ""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                request_id = candidate
        if name not in _HOP_BY_HOP:
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
    request_id = request_id or uuid.uuid4().hex
    client = scope.get("client")
    if client:
        headers.append(("X-Forwarded-For", str(client[0])))
    headers.append(("X-Forwarded-Proto", str(scope.get("scheme", "http"))))
    if host:
        headers.append(("X-Forwarded-Host", host))
    headers.append(("X-Request-Id", request_id))
    return headers, request_id


def _without_internal_locations(
    headers: list[tuple[bytes, bytes]], base: str
) -> list[tuple[bytes, bytes]]:
    """A `Location` pointing at a service's own address becomes a path on the gateway's."""
    internal = base.encode("latin-1")
    kept = []
    for name, value in headers:
        if name in (b"location", b"content-location") and value.startswith(b"http"):
            if not value.startswith(internal):
                continue  # an absolute address we cannot vouch for is dropped
            value = value[len(internal) :] or b"/"
        kept.append((name, value))
    return kept


def create_gateway(
    upstreams: Mapping[str, str],
    routes: RouteTable | None = None,
    settings: Settings | None = None,
) -> Gateway:
    """The gateway for `upstreams`; routes default to the four services' published ones; the
    console at /console reads `settings` (default: from the environment)."""
    if routes is None:
        from operations.catalog import published_routers

        routes = RouteTable.of_services(published_routers())
    return Gateway(upstreams, routes, settings)


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

    app = FastAPI(
        title="yellowcart gateway",
        docs_url=None,
        openapi_url=None,
        redirect_slashes=False,
        lifespan=lifespan,
    )
    install_problem_handlers(app)

    async def get_json(url: str, timeout_s: float) -> tuple[int, Any]:
        assert gateway.session is not None
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with gateway.session.get(url, timeout=timeout) as answer:
            return answer.status, await answer.json(content_type=None)

    @app.get(
        "/health",
        summary="every service's readiness, through the gateway",
        tags=["operations"],
        responses={503: {"description": "a service is down or not ready"}},
    )
    async def health() -> JSONResponse:
        return await _services_health("/health")

    async def _services_health(path: str) -> JSONResponse:
        states: dict[str, Any] = {}
        ready = True
        for name, base in upstreams.items():
            try:
                status, body = await get_json(f"{base}{path}", 2)
                states[name] = body
                ready = ready and status == 200
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
                states[name] = {"status": "down", "error": type(error).__name__}
                ready = False
        return JSONResponse(
            {"status": "ok" if ready else "degraded", "services": states},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/health/live",
        summary="the gateway process answers (it answers 503 per route while a service is down)",
        tags=["operations"],
    )
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/health/ready",
        summary="every service ready (store, broker, consumers, outbox), through the gateway",
        tags=["operations"],
        responses={503: {"description": "a service is down or not ready"}},
    )
    async def ready() -> JSONResponse:
        return await _services_health("/health/ready")

    @app.get(
        "/metrics",
        summary="the gateway's Prometheus metrics (each service serves its own on its port)",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "yellowcart", "version": "0.1.0"},
            "paths": {},
            "components": {"schemas": {}, "securitySchemes": {}},
        }
        missing: list[str] = []
        for name, base in upstreams.items():
            try:
                status, document = await get_json(f"{base}/openapi.json", 10)
                if status != 200 or not isinstance(document, dict):
                    raise ValueError(f"status {status}")
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                missing.append(name)
                continue
            for path, operations in document.get("paths", {}).items():
                if path not in PRIVATE_PATHS:
                    merged["paths"][path] = operations
            for section, values in document.get("components", {}).items():
                merged["components"].setdefault(section, {}).update(values)
        own = app.openapi()
        merged["paths"].update(own.get("paths", {}))
        for section, values in own.get("components", {}).items():
            merged["components"].setdefault(section, {}).update(values)
        if missing:
            merged["info"]["description"] = (
                f"Incomplete: {', '.join(missing)} did not answer; their routes are missing."
            )
            merged["info"]["x-missing-services"] = missing
        return JSONResponse(merged)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="yellowcart API")

    return app
