"""The SellerRecord aggregate: points, the rolling cancellation rate, standing, replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.penalty.domain import (
    PENALTY_EXPIRY_TIMER,
    STANDING_REVIEW_TIMER,
    DatedKeys,
    SellerRecord,
)
from shared.contracts.events import (
    PENALTY_TOPIC,
    BuyerCancelReason,
    PenaltyApplied,
    PenaltyExpired,
    SellerCancellationCounted,
    SellerCancelReason,
    SellerOrderCounted,
    SellerStandingChanged,
    Standing,
    default_registry,
)
from shared.contracts.policy import PenaltyRules, Policy
from shared.kernel.aggregate import TimerRequest
from shared.kernel.events.envelope import Envelope

SELLER = "seller-1"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
POLICY = Policy()
# no reason carries points (reasons left out of a policy keep their default, so say 0)
RATE_ONLY = Policy(penalty=PenaltyRules(points=dict.fromkeys(SellerCancelReason, 0)))
OUT_OF_STOCK = SellerCancelReason.OUT_OF_STOCK
CANNOT_SHIP = SellerCancelReason.CANNOT_SHIP


def with_orders(count: int, at: datetime = T0, policy: Policy = POLICY) -> SellerRecord:
    record = SellerRecord(SELLER)
    for n in range(count):
        record.on_order_placed(f"o-{n}", at, at, policy)
    return record


def standing_changes(record: SellerRecord) -> list[tuple[Standing, Standing]]:
    return [
        (e.previous, e.standing) for e in record.pending if isinstance(e, SellerStandingChanged)
    ]


def state_of(record: SellerRecord, now: datetime) -> dict[str, Any]:
    """Everything the record knows, and what it reports `now`, without live bookkeeping."""
    bookkeeping = {"pending", "pending_timers", "version"}
    known = {k: v for k, v in vars(record).items() if k not in bookkeeping}
    return {**known, "performance": record.performance(now, POLICY)}


# --- orders -----------------------------------------------------------------------------------


def test_an_order_is_counted_once_however_often_it_arrives() -> None:
    record = SellerRecord(SELLER)
    record.on_order_placed("o-1", T0, T0, POLICY)
    record.on_order_placed("o-1", T0, T0 + timedelta(minutes=1), POLICY)

    assert record.pending == [SellerOrderCounted(seller_id=SELLER, order_id="o-1", placed_at=T0)]
    assert record.performance(T0, POLICY).orders_in_window == 1


def test_the_counting_events_travel_on_the_penalty_topic_keyed_by_seller() -> None:
    registry = default_registry()
    event = SellerOrderCounted(seller_id=SELLER, order_id="o-1", placed_at=T0)
    envelope = Envelope.of(
        event,
        stream_id=SellerRecord.stream_id_for(SELLER),
        stream_version=1,
        occurred_at=T0,
        producer="penalty",
        correlation_id="o-1",
        causation_id=None,
    )

    assert (event.topic, event.partition_key()) == (PENALTY_TOPIC, SELLER)
    assert registry.decode(envelope) == event


# --- penalties --------------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "points"), [(OUT_OF_STOCK, 3), (CANNOT_SHIP, 2)])
def test_seller_fault_cancellation_applies_the_points_of_its_reason_for_90_days(
    reason: SellerCancelReason, points: int
) -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", reason, T0, POLICY)

    counted, applied = record.pending
    assert counted == SellerCancellationCounted(
        seller_id=SELLER, order_id="o-1", reason=reason, cancelled_at=T0
    )
    assert applied == PenaltyApplied(
        seller_id=SELLER,
        penalty_id="pen-seller-1-o-1",
        order_id="o-1",
        reason=reason,
        points=points,
        expires_at=T0 + timedelta(days=90),
        policy_version=POLICY.version,
    )
    assert record.pending_timers == [
        TimerRequest(STANDING_REVIEW_TIMER, T0 + timedelta(days=7), {}),
        TimerRequest(
            PENALTY_EXPIRY_TIMER, T0 + timedelta(days=90), {"penalty_id": applied.penalty_id}
        ),
    ]
    assert record.performance(T0, POLICY).active_points == points


def test_one_penalty_per_order_even_when_the_cancellation_arrives_twice() -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0, POLICY)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0 + timedelta(hours=1), POLICY)

    assert sum(isinstance(e, PenaltyApplied) for e in record.pending) == 1
    assert len(record.pending_timers) == 2
    performance = record.performance(T0 + timedelta(hours=1), POLICY)
    assert performance.active_points == 3
    assert performance.seller_fault_cancellations_in_window == 1


def test_an_unanswered_buyer_request_counts_in_the_rate_without_points() -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", BuyerCancelReason.CHANGED_MIND, T0, POLICY)

    assert [type(e) for e in record.pending] == [SellerCancellationCounted]
    performance = record.performance(T0, POLICY)
    assert performance.seller_fault_cancellations_in_window == 1
    assert performance.active_points == 0
    assert performance.penalties == ()


def test_a_reason_the_policy_does_not_price_applies_no_penalty() -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0, RATE_ONLY)
    assert [type(e) for e in record.pending] == [SellerCancellationCounted]


# --- standing by points -----------------------------------------------------------------------


def test_points_move_the_seller_through_warning_restricted_and_suspended() -> None:
    record = SellerRecord(SELLER)
    for n in range(4):
        record.on_seller_fault_cancellation(f"o-{n}", OUT_OF_STOCK, T0 + timedelta(days=n), POLICY)

    assert standing_changes(record) == [
        (Standing.GOOD, Standing.WARNING),
        (Standing.WARNING, Standing.RESTRICTED),
        (Standing.RESTRICTED, Standing.SUSPENDED),
    ]
    last = record.pending[-1]
    assert isinstance(last, SellerStandingChanged)
    assert last.active_points == 12
    assert last.cancellation_rate == 0.0
    assert last.policy_version == POLICY.version
    assert record.standing is Standing.SUSPENDED


def test_points_expire_after_90_days_and_the_standing_recovers() -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0, POLICY)
    record.on_seller_fault_cancellation("o-2", CANNOT_SHIP, T0 + timedelta(days=1), POLICY)
    assert record.standing is Standing.WARNING

    record.expire_penalty("pen-seller-1-o-1", T0 + timedelta(days=90), POLICY)

    expired, recovered = record.pending[-2:]
    assert expired == PenaltyExpired(
        seller_id=SELLER, penalty_id="pen-seller-1-o-1", order_id="o-1", points=3
    )
    assert isinstance(recovered, SellerStandingChanged)
    assert (recovered.previous, recovered.standing) == (Standing.WARNING, Standing.GOOD)
    assert recovered.active_points == 2
    assert record.performance(T0 + timedelta(days=90), POLICY).standing is Standing.GOOD


def test_expiry_timer_fired_early_twice_or_for_an_unknown_penalty_records_nothing() -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0, POLICY)
    expires_at = T0 + timedelta(days=90)

    record.expire_penalty("pen-seller-1-o-1", expires_at - timedelta(seconds=1), POLICY)
    assert not any(isinstance(e, PenaltyExpired) for e in record.pending)
    record.expire_penalty("pen-seller-1-o-1", expires_at, POLICY)
    record.expire_penalty("pen-seller-1-o-1", expires_at + timedelta(hours=1), POLICY)
    record.expire_penalty("pen-seller-1-o-9", expires_at, POLICY)
    assert sum(isinstance(e, PenaltyExpired) for e in record.pending) == 1


def test_overdue_points_stop_counting_before_their_timer_fires() -> None:
    record = SellerRecord(SELLER)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0, POLICY)

    performance = record.performance(T0 + timedelta(days=90), POLICY)

    assert performance.active_points == 0
    assert performance.penalties[0].expired


# --- standing by rate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orders", "standing"),
    [
        (40, Standing.WARNING),
        (20, Standing.RESTRICTED),
        (10, Standing.SUSPENDED),
        (41, Standing.GOOD),
    ],
)
def test_the_cancellation_rate_in_the_window_sets_the_band(orders: int, standing: Standing) -> None:
    record = with_orders(orders, policy=RATE_ONLY)
    record.on_seller_fault_cancellation("o-0", CANNOT_SHIP, T0, RATE_ONLY)

    assert record.standing is standing
    performance = record.performance(T0, RATE_ONLY)
    assert performance.cancellation_rate == pytest.approx(1 / orders)


def test_the_rate_puts_no_one_in_a_band_below_the_minimum_orders() -> None:
    record = with_orders(9, policy=RATE_ONLY)
    record.on_seller_fault_cancellation("o-0", CANNOT_SHIP, T0, RATE_ONLY)
    assert record.standing is Standing.GOOD

    record.on_order_placed("o-9", T0, T0 + timedelta(minutes=1), RATE_ONLY)

    assert standing_changes(record) == [(Standing.GOOD, Standing.SUSPENDED)]
    changed = record.pending[-1]
    assert isinstance(changed, SellerStandingChanged)
    assert changed.cancellation_rate == pytest.approx(0.1)


def test_the_rate_window_slides_and_the_standing_recovers_on_review() -> None:
    record = with_orders(10, policy=RATE_ONLY)
    record.on_seller_fault_cancellation("o-0", CANNOT_SHIP, T0, RATE_ONLY)
    assert record.standing is Standing.SUSPENDED

    record.reevaluate(T0 + timedelta(days=7) - timedelta(seconds=1), RATE_ONLY)
    assert record.standing is Standing.SUSPENDED
    week_later = T0 + timedelta(days=7)
    record.reevaluate(week_later, RATE_ONLY)

    performance = record.performance(week_later, RATE_ONLY)
    assert performance.standing is Standing.GOOD
    assert (performance.orders_in_window, performance.seller_fault_cancellations_in_window) == (
        0,
        0,
    )
    assert performance.cancellation_rate == 0.0


def test_new_orders_dilute_the_rate_and_lift_the_band() -> None:
    record = with_orders(10, policy=RATE_ONLY)
    record.on_seller_fault_cancellation("o-0", CANNOT_SHIP, T0, RATE_ONLY)
    for n in range(10, 40):
        record.on_order_placed(f"o-{n}", T0, T0 + timedelta(hours=1), RATE_ONLY)

    assert standing_changes(record) == [
        (Standing.GOOD, Standing.SUSPENDED),
        (Standing.SUSPENDED, Standing.RESTRICTED),
        (Standing.RESTRICTED, Standing.WARNING),
    ]


def test_reevaluating_without_a_change_records_nothing() -> None:
    record = with_orders(3)
    record.reevaluate(T0 + timedelta(days=30), POLICY)
    assert [type(e) for e in record.pending] == [SellerOrderCounted] * 3


# --- the performance view ---------------------------------------------------------------------


def test_performance_reports_points_rate_standing_and_penalties() -> None:
    record = with_orders(20)
    record.on_order_placed("old", T0 - timedelta(days=8), T0, POLICY)
    record.on_seller_fault_cancellation("o-1", OUT_OF_STOCK, T0, POLICY)
    record.on_seller_fault_cancellation("o-2", CANNOT_SHIP, T0, POLICY)

    performance = record.performance(T0 + timedelta(hours=1), POLICY)

    assert performance.seller_id == SELLER
    assert performance.active_points == 5
    assert performance.orders_in_window == 20
    assert performance.seller_fault_cancellations_in_window == 2
    assert performance.cancellation_rate == pytest.approx(0.1)
    assert performance.standing is Standing.SUSPENDED
    assert [(p.order_id, p.points, p.applied_at, p.expired) for p in performance.penalties] == [
        ("o-1", 3, T0, False),
        ("o-2", 2, T0, False),
    ]


# --- replay -----------------------------------------------------------------------------------

STEPS = st.tuples(
    st.sampled_from(["order", "cancel", "buyer_cancel", "expire", "review"]),
    st.integers(0, 30),
    st.integers(0, 200),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(STEPS, max_size=40))
def test_replaying_the_recorded_events_rebuilds_the_same_record(
    steps: list[tuple[str, int, int]],
) -> None:
    record = SellerRecord(SELLER)
    now = T0
    for name, order, days in steps:
        now = max(now, T0 + timedelta(days=days))
        order_id = f"o-{order}"
        match name:
            case "order":
                record.on_order_placed(order_id, now, now, POLICY)
            case "cancel":
                record.on_seller_fault_cancellation(order_id, OUT_OF_STOCK, now, POLICY)
            case "buyer_cancel":
                reason = BuyerCancelReason.CHANGED_MIND
                record.on_seller_fault_cancellation(order_id, reason, now, POLICY)
            case "expire":
                record.expire_penalty(f"pen-{SELLER}-{order_id}", now, POLICY)
            case _:
                record.reevaluate(now, POLICY)

    rebuilt = SellerRecord.replay(SELLER, record.pending)
    assert state_of(rebuilt, now) == state_of(record, now)
    assert rebuilt.version == len(record.pending)
    changes = standing_changes(record)
    assert all(old is not new for old, new in changes)
    assert all(a[1] is b[0] for a, b in pairwise(changes))


@settings(max_examples=200, deadline=None)
@given(
    puts=st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(min_value=0, max_value=40)),
        max_size=40,
    ),
    after=st.integers(min_value=-5, max_value=45),
    until=st.integers(min_value=-5, max_value=45),
)
def test_dated_keys_count_a_window_as_a_sum_over_every_moment_would(
    puts: list[tuple[str, int]], after: int, until: int
) -> None:
    """The sorted index counts what the plain sum over the latest moment of each key counts,
    whatever the order of arrival, repeated keys (a key moved to a new moment) and ties."""
    keys, latest = DatedKeys(), {}
    for key, minutes in puts:
        keys.put(key, T0 + timedelta(minutes=minutes))
        latest[key] = T0 + timedelta(minutes=minutes)
    start, end = T0 + timedelta(minutes=after), T0 + timedelta(minutes=until)
    assert keys.count_within(start, end) == sum(start < t <= end for t in latest.values())
    assert all(key in keys and keys[key] == moment for key, moment in latest.items())
