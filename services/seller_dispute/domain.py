"""The CancellationCase aggregate: a buyer's request, the seller's filing, the platform's decision.

Order facts (who bought, from whom, paid when, shipped or cancelled) belong to the order service.
The case does not copy them into its own stream: the application folds the order events it has
consumed into an `OrderFacts` value (`OrderFacts.evolve`, idempotent, stored as a read model)
and loads the case with it (`CancellationCase.load`). So the case stream holds only published
dispute events, and the facts are an input that `apply` never has to reconstruct.

The rules that applied to a buyer request (`respond_by`, `on_no_response`) are frozen on the
request event: the response-window timer decides with them, not with whatever policy is current,
because that is what the buyer and seller were told.

A buyer request approved because the seller stayed silent counts against the seller
(`seller_fault=True`, as on TikTok Shop); one approved within minutes of payment does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.contracts.events import (
    BuyerCancellationDeclined,
    BuyerCancellationLapsed,
    BuyerCancellationRequested,
    BuyerCancelReason,
    CancellationCaseClosed,
    OrderCancelled,
    OrderPaymentConfirmed,
    OrderPlaced,
    OrderShipped,
    PaymentMethod,
    SellerCancelApproved,
    SellerCancelReason,
    SellerCancelRejected,
    SellerCancelRequested,
)
from shared.contracts.policy import Policy
from shared.kernel.aggregate import Aggregate, Conflict, Invalid, NotFound
from shared.kernel.events.envelope import DomainEvent

SELLER_RESPONSE_TIMER = "seller_response"

RequestStatus = Literal["open", "declined", "lapsed", "approved", "answered", "closed"]
FilingStatus = Literal["open", "approved", "rejected", "closed"]


def order_id_of(request_or_filing_id: str) -> str:
    """The order (= case id) a request id `<order>.r<n>` or filing id `<order>.f<n>` belongs to."""
    return request_or_filing_id.rsplit(".", 1)[0]


class OrderFacts(BaseModel):
    """What the dispute service knows of an order, folded from order events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    buyer_id: str | None = None
    seller_id: str | None = None
    payment_method: PaymentMethod | None = None
    paid_at: AwareDatetime | None = None
    shipped: bool = False
    cancelled: bool = False

    def evolve(self, event: DomainEvent) -> OrderFacts:
        """The facts after one more order event; a repeated event changes nothing."""
        match event:
            case OrderPlaced():
                return self.model_copy(
                    update={
                        "buyer_id": event.buyer_id,
                        "seller_id": event.seller_id,
                        "payment_method": event.payment_method,
                    }
                )
            case OrderPaymentConfirmed() if self.paid_at is None:
                return self.model_copy(update={"paid_at": event.paid_at})
            case OrderShipped():
                return self.model_copy(update={"shipped": True})
            case OrderCancelled():
                return self.model_copy(update={"cancelled": True})
        return self


@dataclass(frozen=True)
class BuyerRequest:
    request_id: str
    buyer_id: str
    reason: BuyerCancelReason
    note: str | None
    respond_by: datetime
    on_no_response: Literal["lapse", "auto_approve"]
    policy_version: str
    status: RequestStatus = "open"


@dataclass(frozen=True)
class SellerFiling:
    filing_id: str
    seller_id: str
    reason: SellerCancelReason
    note: str | None
    request_id: str | None
    review_mode: Literal["manual", "auto"]
    status: FilingStatus = "open"
    decided_by: str | None = None


class CancellationCase(Aggregate):
    stream_prefix = "case"

    def __init__(self, order_id: str, facts: OrderFacts | None = None) -> None:
        super().__init__(order_id)
        self.facts = facts or OrderFacts(order_id=order_id)
        self._requests: dict[str, BuyerRequest] = {}
        self._filings: dict[str, SellerFiling] = {}
        self.approved_id: str | None = None
        self.closed_because: Literal["shipped", "cancelled"] | None = None

    @classmethod
    def load(cls, facts: OrderFacts, events: Iterable[DomainEvent]) -> Self:
        """Rebuild the case from its stream, knowing the order as `facts` say (not `replay`,
        which knows no order and so refuses every command as NotFound)."""
        case = cls(facts.order_id, facts)
        for event in events:
            case.apply(event)
            case.version += 1
        return case

    # --- queries ------------------------------------------------------------------------------

    @property
    def buyer_id(self) -> str | None:
        return self.facts.buyer_id

    @property
    def seller_id(self) -> str | None:
        return self.facts.seller_id

    @property
    def requests(self) -> tuple[BuyerRequest, ...]:
        return tuple(self._requests.values())

    @property
    def filings(self) -> tuple[SellerFiling, ...]:
        return tuple(self._filings.values())

    @property
    def open_request(self) -> BuyerRequest | None:
        return next((r for r in self._requests.values() if r.status == "open"), None)

    @property
    def open_filing(self) -> SellerFiling | None:
        return next((f for f in self._filings.values() if f.status == "open"), None)

    # --- commands -----------------------------------------------------------------------------

    def request_by_buyer(
        self,
        buyer_id: str,
        reason: BuyerCancelReason,
        note: str | None,
        now: datetime,
        policy: Policy,
    ) -> None:
        if self.facts.buyer_id != buyer_id:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        self._check_order_open()
        paid_at = self.facts.paid_at
        if paid_at is None:
            route = f"POST /orders/{self.id}/cancel"
            raise Conflict(f"the order is not paid: cancel it with {route}", use=route)
        if reason is BuyerCancelReason.OTHER and not note:
            raise Invalid("reason `other` needs a note", field="note")
        if self.open_request is not None:
            raise Conflict("a cancellation request is already waiting for the seller")
        if self.open_filing is not None:
            raise Conflict("the seller has already filed a cancellation of this order")
        request_id = f"{self.id}.r{len(self._requests) + 1}"
        rules = policy.dispute
        respond_by = now + rules.seller_response_window
        _, seller_id = self._parties()
        self.record(
            BuyerCancellationRequested(
                order_id=self.id,
                request_id=request_id,
                buyer_id=buyer_id,
                seller_id=seller_id,
                reason=reason,
                note=note,
                respond_by=respond_by,
                on_no_response=rules.on_no_response,
                policy_version=policy.version,
            )
        )
        early = rules.auto_approve_within_after_payment
        if early is not None and now - paid_at <= early:
            self._approve(request_id, reason, "early_request", False, policy.version)
        else:
            self.schedule(SELLER_RESPONSE_TIMER, respond_by, request_id=request_id)

    def decline_request(self, seller_id: str, request_id: str, note: str | None) -> None:
        if self.facts.seller_id != seller_id:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        self._open_request(request_id)
        self.record(
            BuyerCancellationDeclined(
                order_id=self.id, request_id=request_id, seller_id=seller_id, note=note
            )
        )

    def response_window_passed(self, request_id: str, now: datetime) -> None:
        """Timer: the seller did not answer. Decides with the rules frozen on the request."""
        request = self._requests.get(request_id)
        if request is None or request.status != "open" or now < request.respond_by:
            return
        if request.on_no_response == "lapse":
            self.record(
                BuyerCancellationLapsed(
                    order_id=self.id, request_id=request_id, policy_version=request.policy_version
                )
            )
        else:
            self._approve(request_id, request.reason, "no_response", True, request.policy_version)

    def file_by_seller(
        self,
        seller_id: str,
        reason: SellerCancelReason,
        note: str | None,
        policy: Policy,
        request_id: str | None = None,
    ) -> None:
        """File with the platform; an open buyer request is answered by it (named or not)."""
        if self.facts.seller_id != seller_id:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        self._check_order_open()
        if self.facts.paid_at is None and self.facts.payment_method is not PaymentMethod.COD:
            raise Conflict("the order is not paid: it is cancelled if the payment deadline passes")
        if self.open_filing is not None:
            raise Conflict("a filing for this order is already under review")
        answers = self.open_request if request_id is None else self._open_request(request_id)
        filing_id = f"{self.id}.f{len(self._filings) + 1}"
        review_mode = policy.dispute.review_mode
        self.record(
            SellerCancelRequested(
                order_id=self.id,
                filing_id=filing_id,
                seller_id=seller_id,
                reason=reason,
                note=note,
                request_id=answers.request_id if answers else None,
                review_mode=review_mode,
                policy_version=policy.version,
            )
        )
        if review_mode == "auto":
            self._approve(filing_id, reason, "auto", True, policy.version)

    def approve(self, filing_id: str, operator_id: str, policy: Policy) -> None:
        filing = self._open_filing(filing_id)
        self._approve(filing_id, filing.reason, f"operator:{operator_id}", True, policy.version)

    def reject(self, filing_id: str, operator_id: str, note: str | None, policy: Policy) -> None:
        filing = self._open_filing(filing_id)
        self.record(
            SellerCancelRejected(
                order_id=self.id,
                filing_id=filing_id,
                seller_id=filing.seller_id,
                reason=filing.reason,
                decided_by=f"operator:{operator_id}",
                note=note,
                policy_version=policy.version,
            )
        )

    def on_order_shipped(self) -> None:
        self._close("shipped")

    def on_order_cancelled(self) -> None:
        self._close("cancelled")

    # --- guards and helpers -------------------------------------------------------------------

    def _check_order_open(self) -> None:
        if self.facts.cancelled or self.closed_because == "cancelled":
            raise Conflict("the order is already cancelled")
        if self.facts.shipped or self.closed_because == "shipped":
            raise Conflict("the order is already shipped and can no longer be cancelled")
        if self.approved_id is not None:
            raise Conflict("a cancellation of this order is already approved")

    def _open_request(self, request_id: str) -> BuyerRequest:
        request = self._requests.get(request_id)
        if request is None:
            raise NotFound(f"cancellation request {request_id} not found", request_id=request_id)
        if request.status != "open":
            raise Conflict(f"the request is {request.status}", request_id=request_id)
        return request

    def _open_filing(self, filing_id: str) -> SellerFiling:
        filing = self._filings.get(filing_id)
        if filing is None:
            raise NotFound(f"seller cancellation {filing_id} not found", filing_id=filing_id)
        if filing.status != "open":
            raise Conflict(f"the filing is {filing.status}", filing_id=filing_id)
        return filing

    def _parties(self) -> tuple[str, str]:
        """(buyer_id, seller_id); every command has checked one of them already."""
        buyer_id, seller_id = self.facts.buyer_id, self.facts.seller_id
        if buyer_id is None or seller_id is None:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        return buyer_id, seller_id

    def _approve(
        self,
        decided_id: str,
        reason: SellerCancelReason | BuyerCancelReason,
        decided_by: str,
        seller_fault: bool,
        policy_version: str,
    ) -> None:
        buyer_id, seller_id = self._parties()
        self.record(
            SellerCancelApproved(
                order_id=self.id,
                filing_id=decided_id,
                seller_id=seller_id,
                buyer_id=buyer_id,
                reason=reason,
                seller_fault=seller_fault,
                decided_by=decided_by,
                policy_version=policy_version,
            )
        )

    def _close(self, because: Literal["shipped", "cancelled"]) -> None:
        if self.open_request is None and self.open_filing is None:
            return
        self.record(CancellationCaseClosed(order_id=self.id, closed_because=because))

    # --- state --------------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        match event:
            case BuyerCancellationRequested():
                self._requests[event.request_id] = BuyerRequest(
                    request_id=event.request_id,
                    buyer_id=event.buyer_id,
                    reason=event.reason,
                    note=event.note,
                    respond_by=event.respond_by,
                    on_no_response=event.on_no_response,
                    policy_version=event.policy_version,
                )
            case BuyerCancellationDeclined():
                self._set_request(event.request_id, "declined")
            case BuyerCancellationLapsed():
                self._set_request(event.request_id, "lapsed")
            case SellerCancelRequested():
                self._filings[event.filing_id] = SellerFiling(
                    filing_id=event.filing_id,
                    seller_id=event.seller_id,
                    reason=event.reason,
                    note=event.note,
                    request_id=event.request_id,
                    review_mode=event.review_mode,
                )
                if event.request_id is not None:
                    self._set_request(event.request_id, "answered")
            case SellerCancelApproved():
                self.approved_id = event.filing_id
                if event.filing_id in self._filings:
                    self._set_filing(event.filing_id, "approved", event.decided_by)
                else:
                    self._set_request(event.filing_id, "approved")
            case SellerCancelRejected():
                self._set_filing(event.filing_id, "rejected", event.decided_by)
            case CancellationCaseClosed():
                self.closed_because = event.closed_because
                if (request := self.open_request) is not None:
                    self._set_request(request.request_id, "closed")
                if (filing := self.open_filing) is not None:
                    self._set_filing(filing.filing_id, "closed", None)
            case _:
                raise TypeError(f"a cancellation case cannot apply {event.event_type}")

    def _set_request(self, request_id: str, status: RequestStatus) -> None:
        self._requests[request_id] = replace(self._requests[request_id], status=status)

    def _set_filing(self, filing_id: str, status: FilingStatus, decided_by: str | None) -> None:
        self._filings[filing_id] = replace(
            self._filings[filing_id], status=status, decided_by=decided_by
        )
