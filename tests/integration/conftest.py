"""Service apps in-process for HTTP integration tests.

Each app runs its real lifespan (SQLite store under a tmp dir, Kafka consumers in the session
broker, outbox relay, timers) in a task of its own, as a server would, and is called through
`httpx.ASGITransport`. Two rules keep the suites independent while sharing one broker:

- Services subscribe with fixed consumer-group names (`order.view`, `payment.reactions`, …).
  Two live instances of one service would split a group's partitions between them, so a module
  starts each full service once (module-scoped) and never twice at the same time.
- An *edge-only* app (`consumers=False`) joins no group: it is cheap to start per test and has a
  fresh, empty store, which is what "nothing was stored" is asserted against.

Every test names its buyers and sellers uniquely (`uid`), because the topics are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from operations.catalog import spec_of
from operations.localbroker import LocalBroker
from shared.contracts.policy import Policy
from shared.kernel.auth import Role, mint_token
from shared.kernel.events.envelope import Envelope
from shared.kernel.runtime import ServiceSpec, Wiring, create_service_app
from shared.kernel.settings import Settings
from shared.kernel.storage import open_event_store
from shared.kernel.webhooks import signed_headers
from tests.conftest import eventually

# Tansu answers a group join after about half the session timeout: 2 s keeps joins near 1 s.
TEST_SESSION_TIMEOUT_MS = 2000
STARTUP_TIMEOUT_S = 30.0
PROBLEM_JSON = "application/problem+json"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def service_settings(kafka: LocalBroker, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        broker_url=kafka.bootstrap_servers,
        data_dir=str(data_dir),
        consumer_session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
        **overrides,
    )


# --- running apps --------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    app: FastAPI
    settings: Settings
    client: httpx.AsyncClient

    async def stored_events(self) -> list[Envelope]:
        return await stored_events(self.settings, self.name)


async def stored_events(settings: Settings, service: str) -> list[Envelope]:
    """Every event in the service's own store, in store order (opened read-side, like an audit)."""
    store = await open_event_store(settings.store_url_for(service))
    try:
        return [event async for commit in store.read_all() for event in commit.events]
    finally:
        await store.close()


def _without_consumers(spec: ServiceSpec) -> ServiceSpec:
    def wire(runtime: Any) -> Wiring:
        return dataclasses.replace(spec.wire(runtime), subscriptions=())

    return dataclasses.replace(spec, wire=wire)


async def _serve(app: FastAPI, started: asyncio.Future[None], stop: asyncio.Event) -> None:
    """Enter and leave the lifespan in one task, the way a server runs it."""
    try:
        async with app.router.lifespan_context(app):
            started.set_result(None)
            await stop.wait()
    except BaseException as error:
        if not started.done():
            started.set_exception(error)
        raise


@contextlib.asynccontextmanager
async def running_services(
    settings: Settings,
    names: Iterable[str],
    *,
    consumers: bool = True,
    policy: Policy | None = None,
) -> AsyncIterator[dict[str, Service]]:
    """Start the named services concurrently; yield them by name with an HTTP client each."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    services: dict[str, Service] = {}
    tasks: list[asyncio.Task[None]] = []
    starts: list[asyncio.Future[None]] = []
    try:
        for name in names:
            spec = spec_of(name, policy or Policy())
            spec = spec if consumers else _without_consumers(spec)
            app = create_service_app(spec, settings)
            started: asyncio.Future[None] = loop.create_future()
            tasks.append(asyncio.create_task(_serve(app, started, stop), name=f"serve-{name}"))
            starts.append(started)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=f"http://{name}.test"
            )
            services[name] = Service(name, app, settings, client)
        await asyncio.wait_for(asyncio.gather(*starts), timeout=STARTUP_TIMEOUT_S)
        yield services
    finally:
        stop.set()
        for service in services.values():
            await service.client.aclose()
        await asyncio.gather(*tasks, return_exceptions=True)


EdgeFactory = Callable[[str], contextlib.AbstractAsyncContextManager[Service]]


@pytest_asyncio.fixture(loop_scope="module")
async def edge(kafka: LocalBroker, tmp_path: Path) -> AsyncIterator[EdgeFactory]:
    """`async with edge("order") as order:` — the service's HTTP edge on a fresh, empty store,
    joining no consumer group (so it never competes with a module's full instance)."""
    settings = service_settings(kafka, tmp_path)

    @contextlib.asynccontextmanager
    async def start(name: str) -> AsyncIterator[Service]:
        async with running_services(settings, [name], consumers=False) as services:
            yield services[name]

    yield start


# --- callers -------------------------------------------------------------------------------


RULES = Settings().token_rules()


@dataclass(frozen=True)
class Tokens:
    """Authorization headers for callers, minted with the services' token secret."""

    secret: str

    def headers(
        self,
        role: Role,
        sub: str,
        *,
        secret: str | None = None,
        issued_at: datetime | None = None,
        ttl: timedelta = timedelta(hours=1),
    ) -> dict[str, str]:
        now = issued_at or datetime.now(UTC)
        token = mint_token(secret or self.secret, sub, role, now, ttl, rules=RULES)
        return {"Authorization": f"Bearer {token}"}

    def buyer(self, sub: str) -> dict[str, str]:
        return self.headers(Role.BUYER, sub)

    def seller(self, sub: str) -> dict[str, str]:
        return self.headers(Role.SELLER, sub)

    def operator(self, sub: str = "ops-1") -> dict[str, str]:
        return self.headers(Role.OPERATOR, sub)


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(Settings().token_secret)


def signed_callback(
    settings: Settings,
    payload: Mapping[str, Any],
    *,
    secret: str | None = None,
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A gateway callback body and its headers, signed as the gateway signs it (now, or `at`)."""
    body = json.dumps(dict(payload)).encode()
    signature = signed_headers(secret or settings.gateway_secret, body, at or datetime.now(UTC))
    return body, {"Content-Type": "application/json", **signature}


def callback_payload(order_id: str, amount: int, reference: str | None = None) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "gateway_reference": reference or uid("gw"),
        "amount": amount,
        "paid_at": datetime.now(UTC).isoformat(),
    }


# --- orders --------------------------------------------------------------------------------


def order_body(seller_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "seller_id": seller_id,
        "items": [{"sku": "TSHIRT-01", "variant": "red/XL", "quantity": 2, "unit_price": 89000}],
        "shipping_address": {
            "recipient": "Siti",
            "phone": "081234567890",
            "street": "Jl. Melati 5",
            "city": "Bandung",
            "province": "Jawa Barat",
            "postal_code": "40115",
        },
        "payment_method": "bank_transfer",
    }
    body.update(overrides)
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status` and a non-empty detail; returns it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"].strip()
    return problem


async def wait_for_status(
    response_of: Callable[[], Awaitable[httpx.Response]], status: int, *, what: str
) -> httpx.Response:
    """Poll a request until it answers `status` (views and other services catch up later)."""
    last: list[httpx.Response] = []

    async def answered() -> bool:
        last[:] = [await response_of()]
        return last[0].status_code == status

    await eventually(answered, what=what)
    return last[0]


async def place_order(
    order: Service, tokens: Tokens, buyer: str, seller: str, **overrides: Any
) -> dict[str, Any]:
    response = await order.client.post(
        "/orders", json=order_body(seller, **overrides), headers=tokens.buyer(buyer)
    )
    assert response.status_code == 201, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def pay(
    order: Service, payment: Service, tokens: Tokens, buyer: str, accepted: dict[str, Any]
) -> None:
    """Wait for the payment intent, post a signed callback, wait until the order is paid."""
    order_id = accepted["order_id"]
    await wait_for_status(
        lambda: payment.client.get(f"/payments/{order_id}", headers=tokens.buyer(buyer)),
        200,
        what=f"the payment intent of {order_id}",
    )
    body, headers = signed_callback(
        payment.settings, callback_payload(order_id, accepted["total_amount"])
    )
    response = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    assert response.status_code == 200, response.text

    async def paid() -> bool:
        view = await order.client.get(f"/orders/{order_id}", headers=tokens.buyer(buyer))
        return bool(view.json().get("status") == "to_ship")

    await eventually(paid, what=f"order {order_id} to be paid")
