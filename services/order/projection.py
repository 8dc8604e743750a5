"""The order view: one document per order, folded from the events of all four services.

Deterministic by construction: the view keeps every event it applied (the timeline) in causal
order, and derives every other field by folding that timeline. Arrival order across topics
therefore never changes the result, a redelivered event is recognised by the last applied
version of its stream, and a rebuild from scratch yields the identical document. Time comes
only from the events.

Causal order: an event comes after the previous event of its stream and after the event that
caused it (its `causation_id`), whatever the clocks of the services that wrote them said;
among events free to go next, the earliest `occurred_at` goes first (then stream id, then
version). So clock skew between services can never show a refund before its cancellation.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.contracts.events import OrderStatus, PaymentMethod
from shared.kernel.events.envelope import Envelope
from shared.kernel.projection import Projection

View = dict[str, Any]
COLLECTION = "order_views"
UNKNOWN = "unknown"  # the status of a view that has heard of an order before its OrderPlaced


def order_id_of(envelope: Envelope) -> str | None:
    order_id = envelope.data.get("order_id")
    return str(order_id) if order_id else None


def fold_order_view(view: View | None, envelope: Envelope) -> View | None:
    """The view after `envelope`; None when the event was already applied (nothing to write)."""
    order_id = order_id_of(envelope)
    if order_id is None:
        return None
    timeline: list[dict[str, Any]] = list(view["timeline"]) if view else []
    applied: dict[str, int] = dict(view["applied"]) if view else {}
    if applied.get(envelope.stream_id, 0) >= envelope.stream_version:
        return None
    applied[envelope.stream_id] = envelope.stream_version
    timeline.append(timeline_entry(envelope))
    return fold(order_id, causal_order(timeline), applied)


def timeline_entry(envelope: Envelope) -> dict[str, Any]:
    return {
        "at": _rfc3339(envelope),
        "event_type": envelope.event_type,
        "producer": envelope.producer,
        "stream_id": envelope.stream_id,
        "stream_version": envelope.stream_version,
        "event_id": envelope.event_id,
        "causation_id": envelope.causation_id,
        "data": envelope.data,
    }


def _rfc3339(envelope: Envelope) -> str:
    """`envelope.wire()["occurred_at"]` without dumping the whole envelope: orjson's RFC 3339
    with `Z` is pydantic's format for a UTC time (`canonical_events` relies on the same)."""
    occurred_at = envelope.occurred_at
    if occurred_at.tzinfo is UTC:
        return orjson.dumps(occurred_at, option=orjson.OPT_UTC_Z).decode()[1:-1]
    return str(envelope.wire()["occurred_at"])


def _wire_time(stored: str) -> str:
    """A stored `occurred_at` as `_rfc3339` writes it. Stores write that very form (UTC, `Z`);
    anything else (a store written by other means) is parsed and written again."""
    if stored.endswith("Z") and len(stored) in (20, 27):
        return stored
    parsed = datetime.fromisoformat(stored).astimezone(UTC)
    return orjson.dumps(parsed, option=orjson.OPT_UTC_Z).decode()[1:-1]


class OrderViewRebuild:
    """Every order view of a log, folded once per order rather than once per event.

    `add` every envelope (any interleaving of the four stores, each store in its own order),
    then `views()` yields exactly what `rebuild(ORDER_VIEW, envelopes)` would — the same
    duplicate rule (a stream version at or below the last applied one is skipped), the same
    causal order, `revision` = the events applied — without sorting and folding an order's
    timeline again for each of its events. The replay's fast path.
    """

    def __init__(self) -> None:
        self._orders: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {}

    def add(self, envelope: Envelope) -> None:
        order_id = order_id_of(envelope)
        if order_id is None:
            return
        known = self._orders.get(order_id)
        if known is None:
            known = self._orders[order_id] = ([], {})
        timeline, applied = known
        if applied.get(envelope.stream_id, 0) >= envelope.stream_version:
            return
        applied[envelope.stream_id] = envelope.stream_version
        timeline.append(timeline_entry(envelope))

    def add_wire(self, wire: dict[str, Any]) -> None:
        """`add` for an event in its stored wire form (`EventStore.read_all_wire`): the same
        entry, without an `Envelope` in between."""
        order_id = wire["data"].get("order_id")
        if not order_id:
            return
        known = self._orders.get(str(order_id))
        if known is None:
            known = self._orders[str(order_id)] = ([], {})
        timeline, applied = known
        stream_id, version = wire["stream_id"], wire["stream_version"]
        if applied.get(stream_id, 0) >= version:
            return
        applied[stream_id] = version
        timeline.append(
            {
                "at": _wire_time(wire["occurred_at"]),
                "event_type": wire["event_type"],
                "producer": wire["producer"],
                "stream_id": stream_id,
                "stream_version": version,
                "event_id": wire["event_id"],
                "causation_id": wire["causation_id"],
                "data": wire["data"],
            }
        )

    def __len__(self) -> int:
        return len(self._orders)

    def views(self) -> Iterator[tuple[str, View]]:
        for order_id, (timeline, applied) in self._orders.items():
            view = fold(order_id, causal_order(timeline), applied)
            view["revision"] = len(timeline)
            yield order_id, view


def causal_order(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries ordered so that each follows its stream predecessor and its cause."""

    def key(entry: dict[str, Any]) -> tuple[str, str, int]:
        return (_sortable(entry["at"]), entry["stream_id"], entry["stream_version"])

    by_time = sorted(timeline, key=key)
    if _respects_causes(by_time):
        # The usual case: clocks agree with causation. The ordering below would pick the
        # earliest ready entry at every step, and the earliest remaining entry is always
        # ready here, so it yields exactly this order (keys are unique: one per stream version).
        return by_time
    by_id = {entry["event_id"]: entry for entry in timeline}
    by_position = {(e["stream_id"], e["stream_version"]): e for e in timeline}
    waits_for: dict[str, set[str]] = {}
    followers: dict[str, list[str]] = {entry["event_id"]: [] for entry in timeline}
    for entry in timeline:
        before = {
            cause["event_id"]
            for cause in (
                by_id.get(entry.get("causation_id") or ""),
                by_position.get((entry["stream_id"], entry["stream_version"] - 1)),
            )
            if cause is not None
        }
        waits_for[entry["event_id"]] = before
        for event_id in before:
            followers[event_id].append(entry["event_id"])
    ready = [(key(e), e["event_id"]) for e in timeline if not waits_for[e["event_id"]]]
    heapq.heapify(ready)
    ordered: list[dict[str, Any]] = []
    while ready:
        _, event_id = heapq.heappop(ready)
        ordered.append(by_id[event_id])
        for follower in followers[event_id]:
            waits_for[follower].discard(event_id)
            if not waits_for[follower]:
                heapq.heappush(ready, (key(by_id[follower]), follower))
    if len(ordered) < len(timeline):  # a cycle cannot come from real causation; keep all
        placed = {entry["event_id"] for entry in ordered}
        ordered.extend(sorted((e for e in timeline if e["event_id"] not in placed), key=key))
    return ordered


def _sortable(at: str) -> str:
    """An RFC 3339 UTC time that sorts as text: a whole second gets its `.000000`, or
    `…:00Z` would sort after `…:00.004000Z` ('Z' is after '.')."""
    if len(at) == 20 and at.endswith("Z"):
        return at[:19] + ".000000Z"
    return at


def _respects_causes(ordered: list[dict[str, Any]]) -> bool:
    """Every entry comes after its stream predecessor and its cause, where they are present."""
    place_of_event = {entry["event_id"]: place for place, entry in enumerate(ordered)}
    place_of_version = {
        (entry["stream_id"], entry["stream_version"]): place for place, entry in enumerate(ordered)
    }
    for place, entry in enumerate(ordered):
        cause = entry.get("causation_id")
        if cause is not None and place_of_event.get(cause, -1) > place:
            return False
        predecessor = (entry["stream_id"], entry["stream_version"] - 1)
        if place_of_version.get(predecessor, -1) > place:
            return False
    return True


def fold(order_id: str, timeline: list[dict[str, Any]], applied: dict[str, int]) -> View:
    view: View = {
        "order_id": order_id,
        "buyer_id": None,
        "seller_id": None,
        "status": UNKNOWN,
        "placed_at": None,
        "updated_at": None,
        "items": [],
        "total_amount": None,
        "currency": "IDR",
        "payment_method": None,
        "shipping_address": None,
        "payment": {"status": "unknown", "deadline_at": None, "paid_at": None, "refunds": []},
        "cancellation": None,
        "case": {"requests": [], "filings": [], "closed_because": None},
        "penalty": None,
        "notes": [],
    }
    for entry in timeline:
        step = _STEPS.get(entry["event_type"])
        if step is not None:
            step(view, entry["data"], entry["at"])
        view["updated_at"] = entry["at"]
    view["timeline"] = timeline
    view["applied"] = dict(sorted(applied.items()))
    return view


def _placed(view: View, data: dict[str, Any], at: str) -> None:
    view.update(
        buyer_id=data["buyer_id"],
        seller_id=data["seller_id"],
        items=data["items"],
        total_amount=data["total_amount"],
        currency=data.get("currency", "IDR"),
        payment_method=data["payment_method"],
        shipping_address=data["shipping_address"],
        placed_at=at,
    )
    if data["payment_method"] == PaymentMethod.COD:
        view["status"] = OrderStatus.TO_SHIP.value
        view["payment"]["status"] = "cash_on_delivery"
    else:
        view["status"] = OrderStatus.AWAITING_PAYMENT.value


def _paid(view: View, data: dict[str, Any], at: str) -> None:
    if view["status"] != OrderStatus.CANCELLED:
        view["status"] = OrderStatus.TO_SHIP.value


def _shipped(view: View, data: dict[str, Any], at: str) -> None:
    view["status"] = OrderStatus.SHIPPED.value


def _cancelled(view: View, data: dict[str, Any], at: str) -> None:
    view["status"] = OrderStatus.CANCELLED.value
    view["cancellation"] = {
        "cancelled_by": data["cancelled_by"],
        "reason": data["reason"],
        "note": data.get("note"),
        "at": at,
        "seller_fault": data.get("seller_fault", False),
    }


def _not_applied(view: View, data: dict[str, Any], at: str) -> None:
    view["notes"].append(
        f"seller cancellation {data['filing_id']} approved but not applied: "
        f"the order was already {data['order_status']}"
    )


def _payment_requested(view: View, data: dict[str, Any], at: str) -> None:
    view["payment"].update(
        status="awaiting_payment",
        amount=data["amount"],
        method=data["method"],
        deadline_at=data["deadline_at"],
        payment_code=data.get("payment_code"),
        virtual_account=data.get("virtual_account"),
    )


def _payment_received(view: View, data: dict[str, Any], at: str) -> None:
    view["payment"].update(status="paid", paid_at=data["paid_at"])


def _payment_kept_apart(kind: str) -> Callable[[View, dict[str, Any], str], None]:
    """Money the order did not take (late, or the wrong amount): listed, refunded apart."""

    def step(view: View, data: dict[str, Any], at: str) -> None:
        view["payment"].setdefault(kind, []).append(
            {"gateway_reference": data["gateway_reference"], "amount": data["amount"], "at": at}
        )

    return step


def _payment_status(status: str) -> Callable[[View, dict[str, Any], str], None]:
    def step(view: View, data: dict[str, Any], at: str) -> None:
        view["payment"]["status"] = status

    return step


def _refunded(view: View, data: dict[str, Any], at: str) -> None:
    view["payment"]["refunds"].append(
        {
            "refund_id": data["refund_id"],
            "amount": data["amount"],
            "reason": data["reason"],
            "gateway_reference": data["gateway_reference"],
            "at": at,
        }
    )
    if data["reason"] == "order_cancelled":
        view["payment"]["status"] = "refunded"


def _requested(view: View, data: dict[str, Any], at: str) -> None:
    view["case"]["requests"].append(
        {
            "request_id": data["request_id"],
            "reason": data["reason"],
            "note": data.get("note"),
            "respond_by": data["respond_by"],
            "status": "open",
            "at": at,
        }
    )


def _request_status(status: str) -> Callable[[View, dict[str, Any], str], None]:
    def step(view: View, data: dict[str, Any], at: str) -> None:
        for request in view["case"]["requests"]:
            if request["request_id"] == data["request_id"]:
                request["status"] = status

    return step


def _filed(view: View, data: dict[str, Any], at: str) -> None:
    view["case"]["filings"].append(
        {
            "filing_id": data["filing_id"],
            "reason": data["reason"],
            "note": data.get("note"),
            "review_mode": data["review_mode"],
            "status": "under_review",
            "at": at,
        }
    )
    for request in view["case"]["requests"]:
        if request["request_id"] == data.get("request_id"):
            request["status"] = "answered_by_filing"


def _decided(decision: str) -> Callable[[View, dict[str, Any], str], None]:
    def step(view: View, data: dict[str, Any], at: str) -> None:
        matched = False
        for filing in view["case"]["filings"]:
            if filing["filing_id"] == data["filing_id"]:
                filing.update(status=decision, decided_by=data["decided_by"], decided_at=at)
                matched = True
        if not matched:  # an approved buyer request (policy) rather than a seller filing
            for request in view["case"]["requests"]:
                if request["request_id"] == data["filing_id"]:
                    request["status"] = decision

    return step


def _case_closed(view: View, data: dict[str, Any], at: str) -> None:
    view["case"]["closed_because"] = data["closed_because"]


def _penalty(view: View, data: dict[str, Any], at: str) -> None:
    view["penalty"] = {
        "penalty_id": data["penalty_id"],
        "points": data["points"],
        "reason": data["reason"],
        "expires_at": data["expires_at"],
        "policy_version": data["policy_version"],
        "expired": False,
    }


def _penalty_expired(view: View, data: dict[str, Any], at: str) -> None:
    if view["penalty"] is not None:
        view["penalty"]["expired"] = True


_STEPS: dict[str, Callable[[View, dict[str, Any], str], None]] = {
    "OrderPlaced": _placed,
    "OrderPaymentConfirmed": _paid,
    "OrderShipped": _shipped,
    "OrderCancelled": _cancelled,
    "SellerCancellationNotApplied": _not_applied,
    "PaymentRequested": _payment_requested,
    "PaymentReceived": _payment_received,
    "LatePaymentReceived": _payment_kept_apart("late_payments"),
    "PaymentAmountMismatched": _payment_kept_apart("mismatched_payments"),
    "PaymentDeadlineExpired": _payment_status("expired"),
    "PaymentIntentClosed": _payment_status("closed"),
    "RefundIssued": _refunded,
    "BuyerCancellationRequested": _requested,
    "BuyerCancellationDeclined": _request_status("declined"),
    "BuyerCancellationLapsed": _request_status("lapsed"),
    "SellerCancelRequested": _filed,
    "SellerCancelApproved": _decided("approved"),
    "SellerCancelRejected": _decided("rejected"),
    "CancellationCaseClosed": _case_closed,
    "PenaltyApplied": _penalty,
    "PenaltyExpired": _penalty_expired,
}


ORDER_VIEW = Projection(collection=COLLECTION, key_of=order_id_of, fold=fold_order_view)
