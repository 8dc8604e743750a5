"""The order view: causal order across services, whatever their clocks and arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import permutations

import orjson

from services.order.projection import ORDER_VIEW, OrderViewRebuild, View, causal_order
from shared.contracts.events import (
    LineItem,
    OrderCancelled,
    OrderPlaced,
    PaymentDeadlineExpired,
    PaymentMethod,
    PaymentRequested,
    ShippingAddress,
)
from shared.kernel.events.envelope import DomainEvent, Envelope

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ORDER = "ord-1"


def envelope(
    event: DomainEvent, stream: str, version: int, at: datetime, cause: Envelope | None
) -> Envelope:
    return Envelope.of(
        event,
        stream_id=stream,
        stream_version=version,
        occurred_at=at,
        producer=stream.split("-")[0],
        correlation_id=ORDER,
        causation_id=cause.event_id if cause else None,
    )


def story_with_skewed_clocks() -> list[Envelope]:
    """The payment service's clock runs 5 s behind the order service's."""
    placed = envelope(
        OrderPlaced(
            order_id=ORDER,
            buyer_id="b-1",
            seller_id="s-1",
            items=(LineItem(sku="A", variant="red", quantity=1, unit_price=1000),),
            shipping_address=ShippingAddress(
                recipient="Siti",
                phone="081234567890",
                street="Jl. Melati 5",
                city="Bandung",
                province="Jawa Barat",
                postal_code="40115",
            ),
            payment_method=PaymentMethod.OVO,
            total_amount=1000,
        ),
        f"order-{ORDER}",
        1,
        T0,
        None,
    )
    skew = timedelta(seconds=-5)
    requested = envelope(
        PaymentRequested(
            order_id=ORDER,
            buyer_id="b-1",
            seller_id="s-1",
            amount=1000,
            method=PaymentMethod.OVO,
            deadline_at=T0 + timedelta(minutes=30),
            policy_version="id-test",
        ),
        f"payment-{ORDER}",
        1,
        T0 + timedelta(milliseconds=20) + skew,
        placed,
    )
    expired = envelope(
        PaymentDeadlineExpired(order_id=ORDER, deadline_at=T0 + timedelta(minutes=30)),
        f"payment-{ORDER}",
        2,
        T0 + timedelta(minutes=30) + skew,
        None,
    )
    cancelled = envelope(
        OrderCancelled(
            order_id=ORDER,
            buyer_id="b-1",
            seller_id="s-1",
            cancelled_by="system",
            reason="payment_deadline_expired",
            was_paid=False,
        ),
        f"order-{ORDER}",
        2,
        T0 + timedelta(minutes=29, seconds=58),  # the order service saw it "before" it expired
        expired,
    )
    return [placed, requested, expired, cancelled]


def fold(envelopes: list[Envelope]) -> View:
    view: View | None = None
    for item in envelopes:
        view = ORDER_VIEW.apply(view, item) or view
    assert view is not None
    return view


def test_an_effect_follows_its_cause_even_when_its_clock_says_earlier() -> None:
    view = fold(story_with_skewed_clocks())
    assert [entry["event_type"] for entry in view["timeline"]] == [
        "OrderPlaced",
        "PaymentRequested",
        "PaymentDeadlineExpired",
        "OrderCancelled",
    ]
    assert view["status"] == "cancelled"
    assert view["cancellation"]["cancelled_by"] == "system"
    assert view["payment"]["status"] == "expired"


def test_every_arrival_order_gives_the_identical_view() -> None:
    """Kafka keeps each stream in order (one key, one partition); streams interleave freely."""
    story = story_with_skewed_clocks()

    def keeps_stream_order(order: tuple[Envelope, ...]) -> bool:
        seen: dict[str, int] = {}
        for item in order:
            if item.stream_version != seen.get(item.stream_id, 0) + 1:
                return False
            seen[item.stream_id] = item.stream_version
        return True

    arrivals = [order for order in permutations(story) if keeps_stream_order(order)]
    assert len(arrivals) == 6
    views = {repr(fold(list(order))) for order in arrivals}
    assert len(views) == 1


def test_a_redelivered_event_changes_nothing() -> None:
    story = story_with_skewed_clocks()
    view = fold(story)
    assert ORDER_VIEW.apply(view, story[1]) is None


def rebuilt_at_once(envelopes: list[Envelope]) -> View:
    rebuild, from_wire = OrderViewRebuild(), OrderViewRebuild()
    for item in envelopes:
        rebuild.add(item)
        from_wire.add_wire(orjson.loads(orjson.dumps(item.wire())))  # as a store returns it
    ((order_id, view),) = rebuild.views()
    assert order_id == ORDER
    assert dict(from_wire.views()) == {ORDER: view}, "the wire path folds the same view"
    return view


def test_the_replays_one_fold_per_order_equals_folding_event_by_event() -> None:
    """Both with clocks that disagree with causation (the graph walk) and with clocks that
    agree (the sorted fast path), and with a redelivered event in the input."""
    skewed = story_with_skewed_clocks()
    placed, requested, expired, cancelled = skewed
    agreeing = [
        placed,
        requested,
        expired,
        Envelope.model_validate(
            {**cancelled.wire(), "occurred_at": expired.occurred_at + timedelta(seconds=1)}
        ),
    ]
    for story in (skewed, agreeing, [*skewed, skewed[1]]):
        assert rebuilt_at_once(story) == fold(story)
    assert rebuilt_at_once(skewed)["timeline"][-1]["event_type"] == "OrderCancelled"


def test_a_whole_second_sorts_before_a_later_moment_of_the_same_second() -> None:
    """Timestamps are compared as text; `…:00Z` (no fraction) once sorted after `…:00.004Z`."""
    second = "2026-12-04T10:00:00"
    entries = [
        {"at": f"{second}.004000Z", "stream_id": "b", "stream_version": 1, "event_id": "late"},
        {"at": f"{second}Z", "stream_id": "a", "stream_version": 1, "event_id": "early"},
    ]
    assert [e["event_id"] for e in causal_order(entries)] == ["early", "late"]
