"""One base URL for the embedded run: a small reverse proxy routing paths to the services.

In containers each service serves its own routes behind the operator's ingress; `yellowcart
up` puts this proxy in front of the four local processes so every public route answers
on one address, and merges their OpenAPI documents into one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from shared.kernel.http import problem_response

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


def service_for(path: str) -> str | None:
    for pattern, service in _COMPILED:
        if pattern.search(path):
            return service
    return None


def create_gateway(upstreams: Mapping[str, str]) -> FastAPI:
    """`upstreams` maps a service name to its base URL (http://127.0.0.1:8001 …)."""
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal client
        client = httpx.AsyncClient(timeout=30)
        yield
        await client.aclose()

    app = FastAPI(title="yellowcart", docs_url=None, openapi_url=None, lifespan=lifespan)

    @app.get("/health")
    async def health() -> JSONResponse:
        assert client is not None
        states: dict[str, Any] = {}
        for name, base in upstreams.items():
            try:
                answer = await client.get(f"{base}/health", timeout=2)
                states[name] = answer.json() if answer.status_code == 200 else answer.status_code
            except httpx.HTTPError as error:
                states[name] = f"down: {type(error).__name__}"
        ready = all(isinstance(state, dict) for state in states.values())
        return JSONResponse(
            {"status": "ok" if ready else "degraded", "services": states},
            status_code=200 if ready else 503,
        )

    @app.get("/openapi.json")
    async def openapi() -> JSONResponse:
        assert client is not None
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "yellowcart", "version": "0.1.0"},
            "paths": {},
            "components": {"schemas": {}, "securitySchemes": {}},
        }
        for base in upstreams.values():
            document = (await client.get(f"{base}/openapi.json")).json()
            merged["paths"].update(document.get("paths", {}))
            for section, values in document.get("components", {}).items():
                merged["components"].setdefault(section, {}).update(values)
        return JSONResponse(merged)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="yellowcart API")

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def proxy(path: str, request: Request) -> Response:
        assert client is not None
        service = service_for("/" + path)
        if service is None or service not in upstreams:
            return problem_response(404, "Not found", f"no route /{path}", "/" + path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            upstream = await client.request(
                request.method,
                f"{upstreams[service]}/{path}",
                params=request.query_params,
                headers=headers,
                content=await request.body(),
            )
        except httpx.HTTPError:
            return problem_response(
                503,
                "Service unavailable",
                f"the {service} service is not answering; nothing was done by this gateway",
                "/" + path,
                headers={"Retry-After": "1"},
            )
        out_headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in _HOP_BY_HOP | {"content-length", "content-encoding"}
        }
        return Response(upstream.content, upstream.status_code, out_headers)

    return app
