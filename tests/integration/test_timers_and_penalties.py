"""Durable timers and what they drive: payment deadlines, seller response windows,
the review of seller filings, and penalty points that expire — all on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.order.domain import OrderStatus
from services.order.handlers import ShipOrder, ship
from services.penalty.handlers import performance
from services.seller_dispute import review_queue
from services.seller_dispute.handlers import (
    DecideFiling,
    DeclineRequest,
    FileCancellation,
    RequestCancellation,
    decide,
    decline_request,
    file_cancellation,
    request_cancellation,
)
from shared.contracts.events import (
    BuyerCancelReason,
    CancelledBy,
    SellerCancelReason,
    Standing,
    SystemCancelReason,
)
from shared.contracts.policy import DisputeRules, Policy
from shared.kernel.clock import FakeClock
from tests.integration.harness import (
    BUYER,
    OPERATOR,
    SELLER,
    T0,
    Bus,
    running_bus,
)

DEADLINE = T0 + timedelta(hours=24)  # bank transfer, default policy
RESPONSE_WINDOW = timedelta(hours=24)  # default seller response window


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with running_bus(tmp_path) as bus:
        yield bus


def with_dispute_rules(**rules: object) -> Policy:
    return Policy(dispute=DisputeRules.model_validate(rules))


async def order_status(bus: Bus, order_id: str) -> OrderStatus:
    order = await bus.order.orders.get(order_id)
    assert order is not None
    return order.status


async def paid_order(bus: Bus) -> str:
    order_id = await bus.place_order()
    await bus.pay(order_id)
    await bus.pump()
    return order_id


# --- the payment deadline ------------------------------------------------------------------


async def test_payment_deadline_fires_once_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with running_bus(tmp_path, clock) as bus:
        order_id = await bus.place_order()
        assert await bus.run_timers("payment", owner="payment@old") == 0  # not due yet

    clock.set(DEADLINE + timedelta(minutes=1))
    async with running_bus(tmp_path, clock) as bus:  # a new process over the same files
        assert await bus.run_timers("payment", owner="payment@new") == 1
        assert await bus.run_timers("payment", owner="payment@new") == 0
        await bus.pump()
        assert len(await bus.events("PaymentDeadlineExpired")) == 1
        order = await bus.order.orders.get(order_id)
        assert order is not None and order.cancellation is not None
        assert order.cancellation.cancelled_by is CancelledBy.SYSTEM
        assert order.cancellation.reason is SystemCancelReason.PAYMENT_DEADLINE_EXPIRED

    clock.advance(timedelta(hours=1))
    async with running_bus(tmp_path, clock) as bus:  # and once more
        assert await bus.run_timers("payment", owner="payment@newer") == 0
        assert len(await bus.events("PaymentDeadlineExpired")) == 1


async def test_two_replicas_fire_the_deadline_once(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with running_bus(tmp_path, clock) as one, running_bus(tmp_path, clock) as two:
        await one.place_order()
        clock.set(DEADLINE + timedelta(minutes=1))
        fired = await asyncio.gather(
            one.run_timers("payment", owner="payment@1"),
            two.run_timers("payment", owner="payment@2"),
        )
        assert sorted(fired) == [0, 1]  # the lease holder fired, the other waited
        assert len(await one.events("PaymentDeadlineExpired")) == 1


async def test_a_timer_fired_but_not_completed_is_fired_again_without_effect(bus: Bus) -> None:
    """The lease holder crashed after firing, before completing: the next holder fires the
    timer again (at least once) and the aggregate makes the second firing a no-op."""
    await bus.place_order()
    bus.clock.set(DEADLINE + timedelta(minutes=1))
    (timer,) = await bus.store("payment").due_timers(bus.clock.now())
    await bus.timer_handler("payment")(timer)  # fired by payment@crashed, never completed
    assert len(await bus.events("PaymentDeadlineExpired")) == 1

    bus.clock.advance(timedelta(minutes=1))  # past the crashed owner's lease
    assert await bus.run_timers("payment", owner="payment@next") == 1
    assert len(await bus.events("PaymentDeadlineExpired")) == 1
    assert await bus.store("payment").due_timers(bus.clock.now()) == []


# --- the seller's response window ----------------------------------------------------------


@pytest.mark.parametrize("on_no_response", ["lapse", "auto_approve"])
async def test_a_silent_seller_lets_the_request_lapse_or_be_approved(
    tmp_path: Path, on_no_response: str
) -> None:
    async with running_bus(
        tmp_path, policy=with_dispute_rules(on_no_response=on_no_response)
    ) as bus:
        order_id = await paid_order(bus)
        await request_cancellation(
            bus.dispute,
            RequestCancellation(
                BUYER, order_id, BuyerCancelReason.CHANGED_MIND, None, at=bus.clock.now()
            ),
        )
        await bus.pump()
        asked_at = bus.clock.now()

        bus.clock.set(asked_at + RESPONSE_WINDOW - timedelta(seconds=1))
        assert await bus.run_timers("seller-dispute") == 0
        bus.clock.set(asked_at + RESPONSE_WINDOW)
        assert await bus.run_timers("seller-dispute") == 1
        assert await bus.run_timers("seller-dispute") == 0
        await bus.pump()

        counts = await bus.counts(order_id)
        if on_no_response == "lapse":
            assert counts["BuyerCancellationLapsed"] == 1
            assert counts["SellerCancelApproved"] == 0
            assert await order_status(bus, order_id) is OrderStatus.TO_SHIP
            assert counts["RefundIssued"] == 0
        else:
            (approved,) = await bus.events("SellerCancelApproved")
            assert approved.data["decided_by"] == "no_response"
            assert approved.data["seller_fault"] is True
            assert await order_status(bus, order_id) is OrderStatus.CANCELLED
            assert counts["RefundIssued"] == 1
            assert counts["SellerCancellationCounted"] == 1  # counts against the seller
            assert counts["PenaltyApplied"] == 0  # a buyer's reason is priced at no points


async def test_a_seller_who_answered_in_time_is_not_overruled_by_the_window(
    tmp_path: Path,
) -> None:
    async with running_bus(
        tmp_path, policy=with_dispute_rules(on_no_response="auto_approve")
    ) as bus:
        order_id = await paid_order(bus)
        case = await request_cancellation(
            bus.dispute,
            RequestCancellation(
                BUYER, order_id, BuyerCancelReason.CHANGED_MIND, None, at=bus.clock.now()
            ),
        )
        await decline_request(
            bus.dispute,
            DeclineRequest(
                SELLER, case.requests[-1].request_id, "already packed", at=bus.clock.now()
            ),
        )
        bus.clock.advance(RESPONSE_WINDOW + timedelta(minutes=1))
        assert await bus.run_timers("seller-dispute") == 1  # fired, changed nothing
        await bus.pump()
        counts = await bus.counts(order_id)
        assert counts["BuyerCancellationDeclined"] == 1
        assert counts["SellerCancelApproved"] == counts["BuyerCancellationLapsed"] == 0
        assert await order_status(bus, order_id) is OrderStatus.TO_SHIP


@pytest.mark.parametrize("review_mode", ["manual", "auto"])
async def test_a_seller_filing_waits_for_an_operator_only_in_manual_review(
    tmp_path: Path, review_mode: str
) -> None:
    async with running_bus(tmp_path, policy=with_dispute_rules(review_mode=review_mode)) as bus:
        order_id = await paid_order(bus)
        case = await file_cancellation(
            bus.dispute,
            FileCancellation(
                SELLER, order_id, SellerCancelReason.CANNOT_SHIP, None, None, at=bus.clock.now()
            ),
        )
        await bus.pump()
        if review_mode == "manual":
            assert (await bus.counts(order_id))["SellerCancelApproved"] == 0
            assert await order_status(bus, order_id) is OrderStatus.TO_SHIP
            await decide(
                bus.dispute,
                DecideFiling(OPERATOR, case.filings[-1].filing_id, True, None, at=bus.clock.now()),
            )
            await bus.pump()

        (approved,) = await bus.events("SellerCancelApproved")
        assert approved.data["decided_by"] == (
            "auto" if review_mode == "auto" else "operator:ops-1"
        )
        assert await order_status(bus, order_id) is OrderStatus.CANCELLED
        counts = await bus.counts(order_id)
        assert counts["RefundIssued"] == 1
        assert counts["PenaltyApplied"] == 1


async def test_the_review_queue_shows_filings_under_review_then_their_decision(
    bus: Bus,
) -> None:
    decided, shipped = await paid_order(bus), await paid_order(bus)
    filings = {}
    for order_id in (decided, shipped):
        case = await file_cancellation(
            bus.dispute,
            FileCancellation(
                SELLER, order_id, SellerCancelReason.OUT_OF_STOCK, None, None, at=bus.clock.now()
            ),
        )
        filings[order_id] = case.filings[-1].filing_id
    await bus.pump(twice=True)
    documents = bus.dispute.cases.documents
    under_review = await review_queue.listed(documents, "under_review")
    assert {f["filing_id"] for f in under_review} == set(filings.values())
    assert all(f["status"] == "under_review" and f["decided_by"] is None for f in under_review)

    await decide(
        bus.dispute,
        DecideFiling(OPERATOR, filings[decided], False, "stock arrived", at=bus.clock.now()),
    )
    await ship(bus.order, ShipOrder(SELLER, shipped, "JNE-1", at=bus.clock.now()))
    await bus.pump(twice=True)
    assert await review_queue.listed(documents, "under_review") == []
    (rejected,) = await review_queue.listed(documents, "rejected")
    assert (rejected["filing_id"], rejected["decided_by"]) == (filings[decided], "operator:ops-1")
    (closed,) = await review_queue.listed(documents, "closed")
    assert closed["filing_id"] == filings[shipped]


# --- penalties -----------------------------------------------------------------------------


async def seller_cancels(bus: Bus, order_id: str, *, twice: bool = False) -> None:
    """The seller files (out of stock), an operator approves, every event arrives (twice)."""
    case = await file_cancellation(
        bus.dispute,
        FileCancellation(
            SELLER, order_id, SellerCancelReason.OUT_OF_STOCK, None, None, at=bus.clock.now()
        ),
    )
    await decide(
        bus.dispute,
        DecideFiling(OPERATOR, case.filings[-1].filing_id, True, None, at=bus.clock.now()),
    )
    await bus.pump(twice=twice)


async def test_an_approval_delivered_twice_cancels_refunds_and_penalises_once(bus: Bus) -> None:
    order_id = await paid_order(bus)
    await seller_cancels(bus, order_id, twice=True)
    await bus.redeliver_log()
    counts = await bus.counts(order_id)
    assert counts["SellerCancelApproved"] == 1
    assert counts["OrderCancelled"] == 1
    assert counts["RefundIssued"] == 1
    assert counts["PenaltyApplied"] == 1
    assert counts["SellerCancellationCounted"] == 1
    # Each reaction carries the id of the event it handled: the de-duplication key.
    (approved,) = await bus.events("SellerCancelApproved")
    (cancelled,) = await bus.events("OrderCancelled")
    assert cancelled.causation_id == approved.event_id
    caused = await bus.events("RefundIssued", "SellerCancellationCounted", "PenaltyApplied")
    assert {e.causation_id for e in caused} == {cancelled.event_id}


async def test_penalty_points_expire_after_90_days_and_standing_recovers(bus: Bus) -> None:
    """Two out-of-stock cancellations (3 points each) reach `warning` (4 points, default
    policy); 90 days later the durable expiry timers take the points away."""
    cancelled_at = bus.clock.now()
    for _ in range(2):
        await seller_cancels(bus, await paid_order(bus))
    seller = await performance(bus.penalty, SELLER, SELLER.sub)
    assert (seller.active_points, seller.standing) == (6, Standing.WARNING)

    bus.clock.set(cancelled_at + timedelta(days=90) - timedelta(seconds=1))
    await bus.run_timers("penalty")  # the 7-day rate reviews: the points still hold
    assert await bus.events("PenaltyExpired") == []
    assert (await performance(bus.penalty, SELLER, SELLER.sub)).standing is Standing.WARNING

    bus.clock.set(cancelled_at + timedelta(days=90))
    assert await bus.run_timers("penalty") == 2
    assert await bus.run_timers("penalty") == 0
    await bus.pump()

    assert len(await bus.events("PenaltyExpired")) == 2
    seller = await performance(bus.penalty, SELLER, SELLER.sub)
    assert (seller.active_points, seller.standing) == (0, Standing.GOOD)
    changes = [
        (e.data["previous"], e.data["standing"]) for e in await bus.events("SellerStandingChanged")
    ]
    assert changes == [("good", "warning"), ("warning", "good")]
    views = await bus.order.views.find("order_views", {"seller_id": SELLER.sub})
    assert [view["penalty"]["expired"] for view in views] == [True, True]
