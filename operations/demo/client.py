"""The demo's HTTP client: the marketplace's people (a buyer, a seller, an operator) and the
payment gateway, speaking the domain over one base URL.

Every call is retried while a service is down or restarting (the gateway answers 503):
commands are idempotent (an Idempotency-Key, a gateway reference) or checked before repeating.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx

from shared.kernel.auth import Role
from shared.kernel.settings import Settings
from shared.kernel.webhooks import signed_headers

ADDRESS = {
    "recipient": "Siti Rahma",
    "phone": "081234567890",
    "street": "Jl. Melati No. 5",
    "city": "Bandung",
    "province": "Jawa Barat",
    "postal_code": "40115",
}


class DemoFailure(Exception):
    """A scenario did not end as the marketplace's rules say, or the system did not answer."""


class Api:
    """An HTTP client that rides out a restarting service (503 / connection refused)."""

    def __init__(self, base_url: str, settings: Settings, run_id: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=15)
        self.settings = settings
        now = datetime.now(UTC)
        self.buyer = f"buyer-{run_id}"
        self.seller = f"shop-{run_id}"
        self.tokens = {
            role: settings.issue_token(sub, role, now, timedelta(hours=2))
            for role, sub in (
                (Role.BUYER, self.buyer),
                (Role.SELLER, self.seller),
                (Role.OPERATOR, f"operator-{run_id}"),
            )
        }

    def call(
        self,
        method: str,
        path: str,
        role: Role | None,
        *,
        ok: tuple[int, ...] = (200, 201),
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.TransportError):  # a service restarting
                response = self.client.request(method, path, headers=headers, **kwargs)
                if response.status_code not in (502, 503, 504):
                    break
            if time.monotonic() > deadline:
                raise DemoFailure(f"{method} {path}: the system did not answer for 90 s")
            time.sleep(0.5)
        if response.status_code not in ok:
            raise DemoFailure(f"{method} {path} → {response.status_code}: {response.text}")
        return response

    def place(self, method: str) -> dict[str, Any]:
        body = {
            "seller_id": self.seller,
            "items": [
                {"sku": "KAOS-01", "variant": "kuning/L", "quantity": 2, "unit_price": 75000}
            ],
            "shipping_address": ADDRESS,
            "payment_method": method,
        }
        key = uuid4().hex
        placed: dict[str, Any] = self.call(
            "POST", "/orders", Role.BUYER, json=body, headers={"Idempotency-Key": key}
        ).json()
        return placed

    def pay(self, order_id: str, amount: int, reference: str) -> dict[str, Any]:
        """A signed gateway callback; waits (404) until the payment service opened the intent."""
        body = json.dumps(
            {
                "order_id": order_id,
                "gateway_reference": reference,
                "amount": amount,
                "paid_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        headers = {
            **signed_headers(self.settings.gateway_secret, body, datetime.now(UTC)),
            "Content-Type": "application/json",
        }
        deadline = time.monotonic() + 30
        while True:
            answer = self.call(
                "POST", "/payments/callbacks", None, content=body, ok=(200, 404), headers=headers
            )
            if answer.status_code == 200:
                result: dict[str, Any] = answer.json()
                return result
            if time.monotonic() > deadline:
                raise DemoFailure(f"no payment intent for {order_id} after 30 s")
            time.sleep(0.2)

    def cancel(
        self, order_id: str, reason: str, note: str | None = None, ok: tuple[int, ...] = (200,)
    ) -> dict[str, Any]:
        """The buyer's cancel button (409 for a paid order, naming the request route)."""
        body = {"reason": reason} if note is None else {"reason": reason, "note": note}
        reply: dict[str, Any] = self.call(
            "POST", f"/orders/{order_id}/cancel", Role.BUYER, json=body, ok=ok
        ).json()
        return reply

    def request_cancellation(self, order_id: str, reason: str) -> dict[str, Any]:
        """The buyer asks the seller to cancel a paid order."""
        reply: dict[str, Any] = self.call(
            "POST",
            f"/orders/{order_id}/cancellation-requests",
            Role.BUYER,
            json={"reason": reason},
            ok=(201,),
        ).json()
        return reply

    def file_cancellation(
        self,
        order_id: str,
        reason: str,
        request_id: str | None = None,
        ok: tuple[int, ...] = (201,),
    ) -> dict[str, Any]:
        """The seller files a cancellation with the platform."""
        body = (
            {"reason": reason}
            if request_id is None
            else {"reason": reason, "request_id": request_id}
        )
        reply: dict[str, Any] = self.call(
            "POST", f"/orders/{order_id}/seller-cancellations", Role.SELLER, json=body, ok=ok
        ).json()
        return reply

    def review_queue(self) -> list[dict[str, Any]]:
        """What the operator sees: filings under review."""
        queue: list[dict[str, Any]] = self.call(
            "GET", "/seller-cancellations", Role.OPERATOR
        ).json()
        return queue

    def approve(self, filing_id: str) -> None:
        """The operator approves a filing."""
        self.call("POST", f"/seller-cancellations/{filing_id}/approve", Role.OPERATOR)

    def performance(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.call(
            "GET", f"/sellers/{self.seller}/performance", Role.SELLER
        ).json()
        return reply

    def order(self, order_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.call("GET", f"/orders/{order_id}", Role.BUYER).json()
        return view

    def wait_for(
        self, order_id: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        view = self.order(order_id)
        while not check(view):
            if time.monotonic() > deadline:
                raise DemoFailure(f"order {order_id} never reached: {what} (now {view['status']})")
            time.sleep(0.3)
            view = self.order(order_id)
        return view
