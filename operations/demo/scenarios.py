"""The marketplace's cancellation scenarios, played end to end over HTTP and judged by its rules.

Five stories from the marketplace's help pages: a buyer cancels an unpaid order at once; the
payment deadline passes and the system cancels; a paid order is cancelled only through the seller
and the platform (refund and penalty follow); a payment after expiry is refunded; a cash-on-
delivery order is cancelled before shipping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from rich.console import Console
from rich.table import Table

from operations.audit import timeline_table
from operations.demo.client import Api, DemoFailure
from shared.kernel.auth import Role
from shared.kernel.settings import Settings


@dataclass
class Outcome:
    name: str
    order_id: str | None = None
    ok: bool = False
    detail: str = ""
    timeline: list[dict[str, Any]] = field(default_factory=list)


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
    summary = Table("scenario", "order", "result", title="the marketplace's scenarios")
    for outcome in outcomes:
        mark = "[green]as the rules say[/]" if outcome.ok else "[red]FAILED[/]"
        summary.add_row(outcome.name, outcome.order_id or "-", f"{mark}: {outcome.detail}")
    console.print(summary)
    points_ok = performance["active_points"] > 0
    if not points_ok:
        console.print("[red]the seller was not penalised[/]")
    return all(outcome.ok for outcome in outcomes) and points_ok
