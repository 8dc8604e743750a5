"""`yellowcart demo`: the seed's scenarios, end to end over HTTP, judged as the seed says.

Against a running system (`--url`) or an ephemeral one it starts itself with short policy
windows. Every call is retried while a service is down or restarting (the gateway answers 503):
commands are idempotent (an Idempotency-Key, a gateway reference) or checked before repeating.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from rich.console import Console
from rich.table import Table

from operations.audit import timeline_table
from operations.localbroker import free_port
from operations.supervisor import answers_health
from shared.kernel.auth import Role, mint_token
from shared.kernel.http import sign_body
from shared.kernel.settings import Settings

SHORT_WINDOW = "PT4S"
DEMO_ENV = {
    # e-wallets get a few seconds so the deadline scenarios finish quickly; bank transfers keep
    # a long window so the paid scenarios are never raced by their own deadline
    "YELLOWCART_POLICY__PAYMENT__WINDOWS": json.dumps(
        {"ovo": SHORT_WINDOW, "gopay": SHORT_WINDOW, "dana": SHORT_WINDOW, "bank_transfer": "PT1H"}
    ),
    "YELLOWCART_POLICY__DISPUTE__SELLER_RESPONSE_WINDOW": "PT1H",
}
ADDRESS = {
    "recipient": "Siti Rahma",
    "phone": "081234567890",
    "street": "Jl. Melati No. 5",
    "city": "Bandung",
    "province": "Jawa Barat",
    "postal_code": "40115",
}


class DemoFailure(Exception):
    """A scenario did not end as the seed says, or the system did not answer."""


@dataclass
class Outcome:
    name: str
    order_id: str | None = None
    ok: bool = False
    detail: str = ""
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Api:
    """An HTTP client that rides out a restarting service (503 / connection refused)."""

    def __init__(self, base_url: str, settings: Settings, run_id: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=15)
        self.settings = settings
        now = datetime.now(UTC)
        self.buyer = f"buyer-{run_id}"
        self.seller = f"shop-{run_id}"
        self.tokens = {
            role: mint_token(settings.token_secret, sub, role, now, timedelta(hours=2))
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
            "X-Yellowcart-Signature": sign_body(self.settings.gateway_secret, body),
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


def _retry(action: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except DemoFailure:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def buyer_cancels_unpaid(api: Api, outcome: Outcome) -> None:
    placed = api.place("bank_transfer")
    outcome.order_id = placed["order_id"]
    api.cancel(outcome.order_id, "changed_mind", ok=(200, 409))  # 409: a retry after a crash
    view = api.wait_for(outcome.order_id, lambda v: v["status"] == "cancelled", "cancelled")
    assert_that(view["cancellation"]["cancelled_by"] == "buyer", "cancelled by the buyer")
    api.wait_for(outcome.order_id, lambda v: v["payment"]["status"] == "closed", "intent closed")
    outcome.detail = "cancelled at once by the buyer (changed_mind); payment intent closed"


def _short_window(placed: dict[str, Any]) -> None:
    """The deadline scenarios wait for the payment window: refuse one a demo cannot wait out."""
    deadline = datetime.fromisoformat(placed["payment_deadline_at"])
    if deadline - datetime.now(UTC) > timedelta(seconds=45):
        raise DemoFailure(
            f"this system's e-wallet payment window ends at {deadline:%H:%M:%S} UTC; start it "
            "with `yellowcart up --demo-windows`, or run `yellowcart demo` without --url"
        )


def deadline_passes(api: Api, outcome: Outcome) -> None:
    placed = api.place("ovo")
    outcome.order_id = placed["order_id"]
    _short_window(placed)
    view = api.wait_for(
        outcome.order_id,
        lambda v: v["status"] == "cancelled" and v["payment"]["status"] == "expired",
        "cancelled by the system",
    )
    assert_that(view["cancellation"]["cancelled_by"] == "system", "cancelled by the system")
    assert_that(view["cancellation"]["reason"] == "payment_deadline_expired", "deadline reason")
    outcome.detail = f"deadline {placed['payment_deadline_at']} passed unpaid → system cancelled"


def paid_order_cancelled_through_seller(api: Api, outcome: Outcome) -> None:
    placed = api.place("bank_transfer")
    order_id = outcome.order_id = placed["order_id"]
    api.pay(order_id, placed["total_amount"], f"gw-{uuid4().hex[:10]}")
    api.wait_for(order_id, lambda v: v["status"] == "to_ship", "paid")
    refused = api.cancel(order_id, "changed_mind", ok=(409,))
    assert_that("cancellation-requests" in refused["detail"], "409 names the request route")
    request = _retry(lambda: api.request_cancellation(order_id, "found_cheaper"))
    filing = api.file_cancellation(order_id, "out_of_stock", request["request_id"])

    def in_review_queue() -> dict[str, Any]:
        for queued in api.review_queue():
            if queued["filing_id"] == filing["filing_id"]:
                return queued
        raise DemoFailure("the filing is not in the operators' review queue")

    queued = _retry(in_review_queue)
    assert_that(queued["reason"] == "out_of_stock", "the operator sees the seller's reason")
    api.approve(queued["filing_id"])
    view = api.wait_for(
        order_id,
        lambda v: (
            v["status"] == "cancelled"
            and v["payment"]["status"] == "refunded"
            and v["penalty"] is not None
        ),
        "cancelled by the seller, refunded, penalised",
    )
    assert_that(view["cancellation"]["cancelled_by"] == "seller", "cancelled by the seller")
    assert_that(len(view["payment"]["refunds"]) == 1, "exactly one refund")
    outcome.detail = (
        f"409 for the buyer → request → seller filed out_of_stock → operator approved → "
        f"refund {view['payment']['refunds'][0]['amount']} → penalty "
        f"{view['penalty']['points']} points"
    )


def late_payment_refunded(api: Api, outcome: Outcome) -> None:
    placed = api.place("gopay")
    order_id = outcome.order_id = placed["order_id"]
    _short_window(placed)
    api.wait_for(order_id, lambda v: v["payment"]["status"] == "expired", "expired")
    answer = api.pay(order_id, placed["total_amount"], f"gw-late-{uuid4().hex[:8]}")
    assert_that(answer["outcome"] in ("refunded", "duplicate"), "late payment refunded")
    view = api.wait_for(
        order_id, lambda v: len(v["payment"]["refunds"]) == 1, "late payment refunded"
    )
    assert_that(view["payment"]["refunds"][0]["reason"] == "late_payment", "late_payment refund")
    outcome.detail = "paid after the deadline → recorded and refunded automatically"


def cod_cancelled_before_shipping(api: Api, outcome: Outcome) -> None:
    placed = api.place("cod")
    order_id = outcome.order_id = placed["order_id"]
    assert_that(placed["payment_deadline_at"] is None, "COD has no payment deadline")
    api.cancel(order_id, "other", "ordered the wrong size", ok=(200, 409))
    view = api.wait_for(order_id, lambda v: v["status"] == "cancelled", "cancelled")
    assert_that(view["cancellation"]["cancelled_by"] == "buyer", "cancelled by the buyer")
    outcome.detail = "cash-on-delivery order cancelled by the buyer before shipping"


def assert_that(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(f"expected: {what}")


SCENARIOS: list[tuple[str, Callable[[Api, Outcome], None]]] = [
    ("buyer cancels an unpaid order", buyer_cancels_unpaid),
    ("payment deadline passes", deadline_passes),
    ("paid order cancelled via seller + platform", paid_order_cancelled_through_seller),
    ("payment after expiry is refunded", late_payment_refunded),
    ("COD order cancelled before shipping", cod_cancelled_before_shipping),
]


def play(base_url: str, console: Console) -> bool:
    api = Api(base_url, Settings(), uuid4().hex[:6])
    outcomes = []
    for name, scenario in SCENARIOS:
        outcome = Outcome(name)
        console.print(f"▶ {name} …")
        try:
            scenario(api, outcome)
            outcome.ok = True
        except DemoFailure as failure:
            outcome.detail = str(failure)
        if outcome.order_id:
            outcome.timeline = api.call(
                "GET", f"/orders/{outcome.order_id}/timeline", Role.BUYER
            ).json()
            console.print(timeline_table(outcome.timeline, f"{name} — {outcome.order_id}"))
        outcomes.append(outcome)
    performance = api.performance()
    console.print(
        f"seller {api.seller}: standing [bold]{performance['standing']}[/], "
        f"{performance['active_points']} points, cancellation rate "
        f"{performance['cancellation_rate']:.0%} over {performance['orders_in_window']} orders"
    )
    summary = Table("scenario", "order", "result", title="the seed's scenarios")
    for outcome in outcomes:
        mark = "[green]as the seed says[/]" if outcome.ok else "[red]FAILED[/]"
        summary.add_row(outcome.name, outcome.order_id or "-", f"{mark}: {outcome.detail}")
    console.print(summary)
    points_ok = performance["active_points"] > 0
    if not points_ok:
        console.print("[red]the seller was not penalised[/]")
    return all(outcome.ok for outcome in outcomes) and points_ok


def _wait_up(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoFailure(f"the ephemeral system exited with {process.returncode}")
        if answers_health(base_url, timeout_s=2):
            return
        time.sleep(0.5)
    raise DemoFailure("the ephemeral system did not become healthy")


def run_demo(url: str | None, console: Console) -> int:
    if url is not None:
        return 0 if play(url.rstrip("/"), console) else 1
    with tempfile.TemporaryDirectory(prefix="yellowcart-demo-") as data_dir:
        port = free_port()
        console.print(f"starting an ephemeral system (data in {data_dir}) …")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "operations",
                "up",
                "--port",
                str(port),
                "--data-dir",
                data_dir,
            ],
            env={**os.environ, **DEMO_ENV},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_up(base_url, process, 120)
            return 0 if play(base_url, console) else 1
        except DemoFailure as failure:
            console.print(f"[red]{failure}[/]; logs in {Path(data_dir) / 'logs'}")
            return 1
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
