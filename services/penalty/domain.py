"""The SellerRecord aggregate: orders, seller-fault cancellations, penalty points, standing.

Standing follows the published shape: violation points that expire `points_expiry` after they
were issued, and a seller-fault cancellation rate over a rolling `rate_window` ending at `now`
(seller-fault cancellations in the window / orders placed in the window). The worst band that
either measure reaches wins (`PenaltyRules.standing_for`).

The rate needs two facts no contract event carries with its time, so this module adds two events
on `penalty.events` (for the README's event catalogue; tolerant readers ignore them):
`SellerOrderCounted` (an order entered the seller's record) and `SellerCancellationCounted` (a
seller-fault cancellation, dated). A cancellation is counted whatever its reason; points are
applied only for a seller reason the policy prices (a buyer request the seller left unanswered
counts in the rate but `PenaltyApplied.reason` cannot name it).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, replace
from datetime import datetime

from shared.contracts.events import (
    BuyerCancelReason,
    PenaltyApplied,
    PenaltyExpired,
    SellerCancellationCounted,
    SellerCancelReason,
    SellerOrderCounted,
    SellerStandingChanged,
    Standing,
)
from shared.contracts.policy import Policy
from shared.kernel.aggregate import Aggregate
from shared.kernel.events.envelope import DomainEvent

PENALTY_EXPIRY_TIMER = "penalty_expiry"
STANDING_REVIEW_TIMER = "standing_review"


@dataclass(frozen=True)
class Penalty:
    penalty_id: str
    order_id: str
    reason: SellerCancelReason
    points: int
    applied_at: datetime
    expires_at: datetime
    expired: bool = False

    def active_at(self, now: datetime) -> bool:
        return not self.expired and now < self.expires_at


@dataclass(frozen=True)
class SellerPerformance:
    """The seller's record as of `now`; `standing` is the one last recorded (in force)."""

    seller_id: str
    active_points: int
    orders_in_window: int
    seller_fault_cancellations_in_window: int
    cancellation_rate: float
    standing: Standing
    penalties: tuple[Penalty, ...]


class DatedKeys:
    """Keys (order ids), each with its moment, counted over a window in O(log n).

    A live-stream sale puts thousands of orders on one seller's record, and every new order
    asks for the rate over the window: summing over every moment made each order cost more
    than the one before. The moments are also kept sorted, so a window is two bisections."""

    def __init__(self) -> None:
        self._moments: dict[str, datetime] = {}
        self._sorted: list[datetime] = []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatedKeys) and self._moments == other._moments

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"DatedKeys({self._moments!r})"

    def __contains__(self, key: str) -> bool:
        return key in self._moments

    def __getitem__(self, key: str) -> datetime:
        return self._moments[key]

    def put(self, key: str, moment: datetime) -> None:
        earlier = self._moments.get(key)
        if earlier is not None:
            del self._sorted[bisect_right(self._sorted, earlier) - 1]
        self._moments[key] = moment
        insort(self._sorted, moment)

    def count_within(self, after: datetime, until: datetime) -> int:
        """How many moments m satisfy after < m <= until."""
        return max(0, bisect_right(self._sorted, until) - bisect_right(self._sorted, after))


class SellerRecord(Aggregate):
    stream_prefix = "seller"

    def __init__(self, seller_id: str) -> None:
        super().__init__(seller_id)
        self._orders = DatedKeys()
        self._cancellations = DatedKeys()
        self._penalties: dict[str, Penalty] = {}
        self.standing = Standing.GOOD

    # --- commands -----------------------------------------------------------------------------

    def on_order_placed(
        self, order_id: str, placed_at: datetime, now: datetime, policy: Policy
    ) -> None:
        if order_id in self._orders:
            return
        self.record(SellerOrderCounted(seller_id=self.id, order_id=order_id, placed_at=placed_at))
        self.reevaluate(now, policy)

    def on_seller_fault_cancellation(
        self,
        order_id: str,
        reason: SellerCancelReason | BuyerCancelReason,
        now: datetime,
        policy: Policy,
    ) -> None:
        """Counted once per order however often it arrives; points for priced seller reasons."""
        if order_id in self._cancellations:
            return
        rules = policy.penalty
        self.record(
            SellerCancellationCounted(
                seller_id=self.id, order_id=order_id, reason=reason, cancelled_at=now
            )
        )
        self.schedule(STANDING_REVIEW_TIMER, now + rules.rate_window)
        if isinstance(reason, SellerCancelReason) and rules.points.get(reason, 0) > 0:
            self._penalise(order_id, reason, now, policy)
        self.reevaluate(now, policy)

    def _penalise(
        self, order_id: str, reason: SellerCancelReason, now: datetime, policy: Policy
    ) -> None:
        penalty_id = f"pen-{self.id}-{order_id}"
        expires_at = now + policy.penalty.points_expiry
        self.record(
            PenaltyApplied(
                seller_id=self.id,
                penalty_id=penalty_id,
                order_id=order_id,
                reason=reason,
                points=policy.penalty.points[reason],
                expires_at=expires_at,
                policy_version=policy.version,
            )
        )
        self.schedule(PENALTY_EXPIRY_TIMER, expires_at, penalty_id=penalty_id)

    def expire_penalty(self, penalty_id: str, now: datetime, policy: Policy) -> None:
        """Timer: the points stop counting. A second firing, or an early one, does nothing."""
        penalty = self._penalties.get(penalty_id)
        if penalty is None or penalty.expired or now < penalty.expires_at:
            return
        self.record(
            PenaltyExpired(
                seller_id=self.id,
                penalty_id=penalty_id,
                order_id=penalty.order_id,
                points=penalty.points,
            )
        )
        self.reevaluate(now, policy)

    def reevaluate(self, now: datetime, policy: Policy) -> None:
        """Record the standing `now` if it left the recorded band (also the window-slide timer)."""
        performance = self.performance(now, policy)
        standing = policy.penalty.standing_for(
            performance.active_points,
            performance.cancellation_rate,
            performance.orders_in_window,
        )
        if standing is self.standing:
            return
        self.record(
            SellerStandingChanged(
                seller_id=self.id,
                previous=self.standing,
                standing=standing,
                active_points=performance.active_points,
                cancellation_rate=performance.cancellation_rate,
                policy_version=policy.version,
            )
        )

    # --- queries ------------------------------------------------------------------------------

    def performance(self, now: datetime, policy: Policy) -> SellerPerformance:
        window_start = now - policy.penalty.rate_window
        orders = self._orders.count_within(window_start, now)
        cancellations = self._cancellations.count_within(window_start, now)
        penalties = tuple(
            p if p.active_at(now) else replace(p, expired=True) for p in self._penalties.values()
        )
        return SellerPerformance(
            seller_id=self.id,
            active_points=sum(p.points for p in penalties if not p.expired),
            orders_in_window=orders,
            seller_fault_cancellations_in_window=cancellations,
            cancellation_rate=min(1.0, cancellations / orders) if orders else 0.0,
            standing=self.standing,
            penalties=penalties,
        )

    # --- state --------------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        match event:
            case SellerOrderCounted():
                self._orders.put(event.order_id, event.placed_at)
            case SellerCancellationCounted():
                self._cancellations.put(event.order_id, event.cancelled_at)
            case PenaltyApplied():
                self._penalties[event.penalty_id] = Penalty(
                    penalty_id=event.penalty_id,
                    order_id=event.order_id,
                    reason=event.reason,
                    points=event.points,
                    applied_at=self._cancellations[event.order_id],
                    expires_at=event.expires_at,
                )
            case PenaltyExpired():
                self._penalties[event.penalty_id] = replace(
                    self._penalties[event.penalty_id], expired=True
                )
            case SellerStandingChanged():
                self.standing = event.standing
            case _:
                raise TypeError(f"a seller record cannot apply {event.event_type}")
