"""The CancellationCase aggregate: buyer requests, seller filings, platform decisions, replay."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.seller_dispute.domain import (
    SELLER_RESPONSE_TIMER,
    CancellationCase,
    OrderFacts,
    order_id_of,
)
from shared.contracts.events import (
    BuyerCancellationDeclined,
    BuyerCancellationLapsed,
    BuyerCancellationRequested,
    BuyerCancelReason,
    CancellationCaseClosed,
    CancelledBy,
    LineItem,
    OrderCancelled,
    OrderPaymentConfirmed,
    OrderPlaced,
    OrderShipped,
    PaymentMethod,
    SellerCancelApproved,
    SellerCancelReason,
    SellerCancelRejected,
    SellerCancelRequested,
    ShippingAddress,
)
from shared.contracts.policy import DisputeRules, Policy
from shared.kernel.aggregate import Conflict, DomainError, Invalid, NotFound, TimerRequest

ORDER = "o-1"
BUYER = "buyer-1"
SELLER = "seller-1"
PAID_AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NOW = PAID_AT + timedelta(hours=3)
POLICY = Policy()
CHANGED_MIND = BuyerCancelReason.CHANGED_MIND
OUT_OF_STOCK = SellerCancelReason.OUT_OF_STOCK


def policy(**dispute: Any) -> Policy:
    return Policy(dispute=DisputeRules(**dispute))


def placed(method: PaymentMethod = PaymentMethod.GOPAY) -> OrderPlaced:
    return OrderPlaced(
        order_id=ORDER,
        buyer_id=BUYER,
        seller_id=SELLER,
        items=(LineItem(sku="TSHIRT-01", variant="red/XL", quantity=1, unit_price=89_000),),
        shipping_address=ShippingAddress(
            recipient="Sari",
            phone="+6281234567890",
            street="Jl. Melati 7",
            city="Bandung",
            province="Jawa Barat",
            postal_code="40115",
        ),
        payment_method=method,
        total_amount=89_000,
    )


def paid(paid_at: datetime = PAID_AT) -> OrderPaymentConfirmed:
    return OrderPaymentConfirmed(
        order_id=ORDER, amount=89_000, gateway_reference="gw-1", paid_at=paid_at
    )


def cancelled() -> OrderCancelled:
    return OrderCancelled(
        order_id=ORDER,
        buyer_id=BUYER,
        seller_id=SELLER,
        cancelled_by=CancelledBy.SELLER,
        reason=OUT_OF_STOCK,
        was_paid=True,
        seller_fault=True,
    )


def facts_after(*events: Any) -> OrderFacts:
    facts = OrderFacts(order_id=ORDER)
    for event in events:
        facts = facts.evolve(event)
    return facts


def paid_case() -> CancellationCase:
    return CancellationCase.load(facts_after(placed(), paid()), [])


def cod_case() -> CancellationCase:
    return CancellationCase.load(facts_after(placed(PaymentMethod.COD)), [])


def requested_case(rules: Policy = POLICY) -> CancellationCase:
    case = paid_case()
    case.request_by_buyer(BUYER, CHANGED_MIND, None, NOW, rules)
    return case


def filed_case(rules: Policy = POLICY) -> CancellationCase:
    case = paid_case()
    case.file_by_seller(SELLER, OUT_OF_STOCK, "sold out", rules)
    return case


def state_of(case: CancellationCase) -> dict[str, Any]:
    return {
        "requests": case.requests,
        "filings": case.filings,
        "approved_id": case.approved_id,
        "closed_because": case.closed_because,
    }


def end_order(case: CancellationCase, because: str) -> None:
    if because == "shipped":
        case.on_order_shipped()
    else:
        case.on_order_cancelled()


def replayed(case: CancellationCase) -> CancellationCase:
    return CancellationCase.load(case.facts, case.pending)


# --- order facts ------------------------------------------------------------------------------


def test_order_facts_fold_order_events_and_a_repeated_payment_keeps_the_first_time() -> None:
    facts = facts_after(
        placed(),
        paid(),
        paid(PAID_AT + timedelta(hours=1)),
        OrderShipped(order_id=ORDER, seller_id=SELLER),
    )

    assert (facts.buyer_id, facts.seller_id) == (BUYER, SELLER)
    assert facts.payment_method is PaymentMethod.GOPAY
    assert facts.paid_at == PAID_AT
    assert facts.shipped and not facts.cancelled
    assert facts_after(placed(), cancelled()).cancelled


def test_order_facts_survive_a_json_round_trip_for_the_read_model() -> None:
    facts = facts_after(placed(), paid())
    assert OrderFacts.model_validate_json(facts.model_dump_json()) == facts


def test_order_facts_ignore_events_that_are_not_order_facts() -> None:
    facts = facts_after(placed())
    assert facts.evolve(CancellationCaseClosed(order_id=ORDER, closed_because="shipped")) == facts


def test_request_and_filing_ids_name_their_order() -> None:
    assert order_id_of("o.with.dots.r2") == "o.with.dots"
    assert order_id_of("o-1.f1") == "o-1"


# --- buyer requests ---------------------------------------------------------------------------


def test_buyer_request_on_a_paid_order_waits_for_the_seller_until_the_window_ends() -> None:
    case = requested_case(policy(seller_response_window=timedelta(days=2)))

    (event,) = case.pending
    assert isinstance(event, BuyerCancellationRequested)
    assert event.request_id == "o-1.r1"
    assert (event.buyer_id, event.seller_id) == (BUYER, SELLER)
    assert event.respond_by == NOW + timedelta(days=2)
    assert event.on_no_response == "lapse"
    assert event.policy_version == policy(seller_response_window=timedelta(days=2)).version
    assert case.pending_timers == [
        TimerRequest(SELLER_RESPONSE_TIMER, NOW + timedelta(days=2), {"request_id": "o-1.r1"})
    ]
    assert case.open_request is not None and case.open_request.status == "open"


@pytest.mark.parametrize("facts", [facts_after(placed(), paid()), OrderFacts(order_id=ORDER)])
def test_buyer_request_for_someone_elses_or_an_unknown_order_is_not_found(
    facts: OrderFacts,
) -> None:
    case = CancellationCase.load(facts, [])
    with pytest.raises(NotFound):
        case.request_by_buyer("buyer-2", CHANGED_MIND, None, NOW, POLICY)
    assert case.pending == []


@pytest.mark.parametrize("method", [PaymentMethod.GOPAY, PaymentMethod.COD])
def test_buyer_request_on_an_unpaid_order_names_the_unpaid_cancel_route(
    method: PaymentMethod,
) -> None:
    case = CancellationCase.load(facts_after(placed(method)), [])

    with pytest.raises(Conflict) as refused:
        case.request_by_buyer(BUYER, CHANGED_MIND, None, NOW, POLICY)

    assert "POST /orders/o-1/cancel" in refused.value.message
    assert refused.value.details["use"] == "POST /orders/o-1/cancel"


@pytest.mark.parametrize(
    ("ending", "word"),
    [(OrderShipped(order_id=ORDER, seller_id=SELLER), "shipped"), (cancelled(), "cancelled")],
)
def test_buyer_request_on_a_shipped_or_cancelled_order_is_refused(ending: Any, word: str) -> None:
    case = CancellationCase.load(facts_after(placed(), paid(), ending), [])

    with pytest.raises(Conflict, match=word):
        case.request_by_buyer(BUYER, CHANGED_MIND, None, NOW, POLICY)


def test_reason_other_needs_a_note() -> None:
    case = paid_case()
    with pytest.raises(Invalid):
        case.request_by_buyer(BUYER, BuyerCancelReason.OTHER, None, NOW, POLICY)
    case.request_by_buyer(BUYER, BuyerCancelReason.OTHER, "gift for a friend", NOW, POLICY)
    assert case.open_request is not None


def test_only_one_buyer_request_is_open_at_a_time() -> None:
    case = requested_case()
    with pytest.raises(Conflict):
        case.request_by_buyer(BUYER, BuyerCancelReason.PRICE, None, NOW, POLICY)
    assert len(case.requests) == 1


def test_buyer_cannot_request_while_the_seller_has_filed() -> None:
    case = filed_case()
    with pytest.raises(Conflict, match="filed"):
        case.request_by_buyer(BUYER, CHANGED_MIND, None, NOW, POLICY)


def test_buyer_may_ask_again_after_the_seller_declined() -> None:
    case = requested_case()
    case.decline_request(SELLER, "o-1.r1", "already packed")
    case.request_by_buyer(BUYER, BuyerCancelReason.PRICE, None, NOW, POLICY)

    assert [(r.request_id, r.status) for r in case.requests] == [
        ("o-1.r1", "declined"),
        ("o-1.r2", "open"),
    ]


@pytest.mark.parametrize("after_payment", [timedelta(minutes=10), timedelta(hours=1)])
def test_request_soon_after_payment_is_approved_at_once_without_seller_fault(
    after_payment: timedelta,
) -> None:
    early = policy(auto_approve_within_after_payment=timedelta(hours=1))
    case = paid_case()

    case.request_by_buyer(BUYER, CHANGED_MIND, None, PAID_AT + after_payment, early)

    requested, approved = case.pending
    assert isinstance(requested, BuyerCancellationRequested)
    assert isinstance(approved, SellerCancelApproved)
    assert approved.filing_id == "o-1.r1"
    assert approved.decided_by == "early_request"
    assert approved.seller_fault is False
    assert approved.reason is CHANGED_MIND
    assert (approved.buyer_id, approved.seller_id) == (BUYER, SELLER)
    assert approved.policy_version == early.version
    assert case.pending_timers == []
    assert case.requests[0].status == "approved"
    assert case.approved_id == "o-1.r1"


def test_request_after_the_early_window_waits_for_the_seller() -> None:
    early = policy(auto_approve_within_after_payment=timedelta(hours=1))
    case = paid_case()

    case.request_by_buyer(BUYER, CHANGED_MIND, None, PAID_AT + timedelta(minutes=61), early)

    assert [type(e) for e in case.pending] == [BuyerCancellationRequested]
    assert case.open_request is not None


# --- seller declines --------------------------------------------------------------------------


def test_seller_declines_an_open_request() -> None:
    case = requested_case()
    case.decline_request(SELLER, "o-1.r1", "already packed")

    assert case.pending[-1] == BuyerCancellationDeclined(
        order_id=ORDER, request_id="o-1.r1", seller_id=SELLER, note="already packed"
    )
    assert case.open_request is None


def test_another_seller_cannot_decline_the_request() -> None:
    case = requested_case()
    with pytest.raises(NotFound):
        case.decline_request("seller-2", "o-1.r1", None)


def test_declining_an_unknown_or_settled_request_is_refused() -> None:
    case = requested_case()
    with pytest.raises(NotFound):
        case.decline_request(SELLER, "o-1.r9", None)
    case.decline_request(SELLER, "o-1.r1", None)
    with pytest.raises(Conflict, match="declined"):
        case.decline_request(SELLER, "o-1.r1", None)


# --- the response window passes ---------------------------------------------------------------


def test_unanswered_request_lapses_when_the_policy_says_lapse() -> None:
    case = requested_case(policy(on_no_response="lapse"))
    respond_by = case.requests[0].respond_by

    case.response_window_passed("o-1.r1", respond_by)

    assert case.pending[-1] == BuyerCancellationLapsed(
        order_id=ORDER, request_id="o-1.r1", policy_version=policy(on_no_response="lapse").version
    )
    assert case.requests[0].status == "lapsed"
    assert case.approved_id is None


def test_unanswered_request_is_approved_against_the_seller_when_the_policy_says_so() -> None:
    rules = policy(on_no_response="auto_approve")
    case = requested_case(rules)

    case.response_window_passed("o-1.r1", NOW + timedelta(days=1))

    approved = case.pending[-1]
    assert isinstance(approved, SellerCancelApproved)
    assert approved.decided_by == "no_response"
    assert approved.seller_fault is True
    assert approved.reason is CHANGED_MIND
    assert approved.policy_version == rules.version
    assert case.requests[0].status == "approved"


def test_response_timer_fired_early_twice_or_for_a_settled_request_records_nothing() -> None:
    case = requested_case(policy(on_no_response="auto_approve"))
    respond_by = case.requests[0].respond_by

    case.response_window_passed("o-1.r1", respond_by - timedelta(seconds=1))
    assert len(case.pending) == 1
    case.response_window_passed("o-1.r1", respond_by)
    case.response_window_passed("o-1.r1", respond_by + timedelta(minutes=1))
    case.response_window_passed("o-1.r7", respond_by)
    assert len(case.pending) == 2


def test_response_timer_after_a_decline_records_nothing() -> None:
    case = requested_case(policy(on_no_response="auto_approve"))
    case.decline_request(SELLER, "o-1.r1", None)
    case.response_window_passed("o-1.r1", NOW + timedelta(days=3))
    assert [type(e) for e in case.pending] == [
        BuyerCancellationRequested,
        BuyerCancellationDeclined,
    ]


# --- seller filings ---------------------------------------------------------------------------


def test_seller_filing_waits_for_the_platform_under_manual_review() -> None:
    case = filed_case(policy(review_mode="manual"))

    (event,) = case.pending
    assert isinstance(event, SellerCancelRequested)
    assert event.filing_id == "o-1.f1"
    assert event.review_mode == "manual"
    assert event.request_id is None
    assert event.policy_version == policy(review_mode="manual").version
    assert case.open_filing is not None and case.open_filing.status == "open"


def test_seller_filing_is_approved_at_once_against_the_seller_under_auto_review() -> None:
    rules = policy(review_mode="auto")
    case = filed_case(rules)

    requested, approved = case.pending
    assert isinstance(requested, SellerCancelRequested) and requested.review_mode == "auto"
    assert approved == SellerCancelApproved(
        order_id=ORDER,
        filing_id="o-1.f1",
        seller_id=SELLER,
        buyer_id=BUYER,
        reason=OUT_OF_STOCK,
        seller_fault=True,
        decided_by="auto",
        policy_version=rules.version,
    )
    assert case.filings[0].status == "approved"


def test_seller_filing_for_a_shipped_order_is_refused() -> None:
    case = CancellationCase.load(
        facts_after(placed(), paid(), OrderShipped(order_id=ORDER, seller_id=SELLER)), []
    )
    with pytest.raises(Conflict, match="already shipped"):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY)


def test_seller_filing_for_a_cancelled_order_is_refused() -> None:
    case = CancellationCase.load(facts_after(placed(), paid(), cancelled()), [])
    with pytest.raises(Conflict, match="cancelled"):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY)


@pytest.mark.parametrize("facts", [facts_after(placed(), paid()), OrderFacts(order_id=ORDER)])
def test_another_seller_filing_is_not_found(facts: OrderFacts) -> None:
    case = CancellationCase.load(facts, [])
    with pytest.raises(NotFound):
        case.file_by_seller("seller-2", OUT_OF_STOCK, None, POLICY)


def test_seller_may_file_for_an_unpaid_cash_on_delivery_order() -> None:
    case = cod_case()
    case.file_by_seller(SELLER, SellerCancelReason.CANNOT_SHIP, None, POLICY)
    assert case.open_filing is not None


def test_seller_cannot_file_for_an_unpaid_prepaid_order() -> None:
    case = CancellationCase.load(facts_after(placed(PaymentMethod.BANK_TRANSFER)), [])
    with pytest.raises(Conflict, match="not paid"):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY)


def test_only_one_filing_is_under_review_at_a_time() -> None:
    case = filed_case()
    with pytest.raises(Conflict):
        case.file_by_seller(SELLER, SellerCancelReason.CANNOT_SHIP, None, POLICY)


@pytest.mark.parametrize("named", [True, False])
def test_seller_filing_answers_the_open_buyer_request(named: bool) -> None:
    case = requested_case(policy(on_no_response="auto_approve"))

    case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY, "o-1.r1" if named else None)

    filing = case.pending[-1]
    assert isinstance(filing, SellerCancelRequested) and filing.request_id == "o-1.r1"
    assert case.requests[0].status == "answered"
    case.response_window_passed("o-1.r1", NOW + timedelta(days=5))
    assert case.pending[-1] == filing


def test_seller_filing_naming_an_unknown_or_settled_request_is_refused() -> None:
    case = requested_case()
    with pytest.raises(NotFound):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY, "o-1.r5")
    case.decline_request(SELLER, "o-1.r1", None)
    with pytest.raises(Conflict, match="declined"):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY, "o-1.r1")


def test_seller_may_file_again_after_a_rejection() -> None:
    case = filed_case()
    case.reject("o-1.f1", "op-1", "restock due tomorrow", POLICY)
    case.file_by_seller(SELLER, SellerCancelReason.CANNOT_SHIP, None, POLICY)
    assert [(f.filing_id, f.status) for f in case.filings] == [
        ("o-1.f1", "rejected"),
        ("o-1.f2", "open"),
    ]


# --- platform decisions -----------------------------------------------------------------------


def test_operator_approval_counts_against_the_seller() -> None:
    case = filed_case()
    case.approve("o-1.f1", "op-1", POLICY)

    approved = case.pending[-1]
    assert isinstance(approved, SellerCancelApproved)
    assert approved.decided_by == "operator:op-1"
    assert approved.seller_fault is True
    assert approved.reason is OUT_OF_STOCK
    assert case.filings[0].status == "approved"
    assert case.filings[0].decided_by == "operator:op-1"
    assert case.approved_id == "o-1.f1"


def test_operator_rejection_is_recorded_with_the_operator_and_note() -> None:
    case = filed_case()
    case.reject("o-1.f1", "op-1", "restock due tomorrow", POLICY)

    assert case.pending[-1] == SellerCancelRejected(
        order_id=ORDER,
        filing_id="o-1.f1",
        seller_id=SELLER,
        reason=OUT_OF_STOCK,
        decided_by="operator:op-1",
        note="restock due tomorrow",
        policy_version=POLICY.version,
    )
    assert case.open_filing is None and case.approved_id is None


@pytest.mark.parametrize("first", ["approve", "reject"])
def test_a_decided_filing_cannot_be_decided_again(first: str) -> None:
    case = filed_case()
    if first == "approve":
        case.approve("o-1.f1", "op-1", POLICY)
    else:
        case.reject("o-1.f1", "op-1", None, POLICY)
    with pytest.raises(Conflict):
        case.approve("o-1.f1", "op-2", POLICY)
    with pytest.raises(Conflict):
        case.reject("o-1.f1", "op-2", None, POLICY)


def test_deciding_an_unknown_filing_is_not_found() -> None:
    case = filed_case()
    with pytest.raises(NotFound):
        case.approve("o-1.f2", "op-1", POLICY)
    with pytest.raises(NotFound):
        case.reject("o-1.f2", "op-1", None, POLICY)


def test_after_an_approval_nobody_opens_another_request_or_filing() -> None:
    case = filed_case(policy(review_mode="auto"))
    with pytest.raises(Conflict, match="approved"):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY)
    with pytest.raises(Conflict, match="approved"):
        case.request_by_buyer(BUYER, CHANGED_MIND, None, NOW, POLICY)


# --- shipping or cancellation closes the case -------------------------------------------------


@pytest.mark.parametrize("because", ["shipped", "cancelled"])
def test_shipping_or_cancelling_closes_the_open_filing_before_the_platform_decides(
    because: str,
) -> None:
    case = filed_case()
    end_order(case, because)

    assert case.pending[-1] == CancellationCaseClosed(order_id=ORDER, closed_because=because)
    assert case.open_filing is None
    assert case.filings[0].status == "closed"
    assert case.closed_because == because
    with pytest.raises(Conflict, match="closed"):
        case.approve("o-1.f1", "op-1", POLICY)


@pytest.mark.parametrize("because", ["shipped", "cancelled"])
def test_shipping_or_cancelling_closes_the_open_buyer_request(because: str) -> None:
    case = requested_case(policy(on_no_response="auto_approve"))
    end_order(case, because)

    assert case.pending[-1] == CancellationCaseClosed(order_id=ORDER, closed_because=because)
    assert case.requests[0].status == "closed"
    case.response_window_passed("o-1.r1", NOW + timedelta(days=2))
    assert isinstance(case.pending[-1], CancellationCaseClosed)


@pytest.mark.parametrize("because", ["shipped", "cancelled"])
def test_shipping_or_cancelling_with_nothing_open_records_nothing(because: str) -> None:
    case = filed_case()
    case.approve("o-1.f1", "op-1", POLICY)
    end_order(case, because)
    assert [e.event_type for e in case.pending] == ["SellerCancelRequested", "SellerCancelApproved"]


def test_a_closed_case_refuses_a_filing_even_when_the_facts_lag_behind() -> None:
    case = requested_case()
    case.on_order_shipped()
    with pytest.raises(Conflict, match="shipped"):
        case.file_by_seller(SELLER, OUT_OF_STOCK, None, POLICY)


# --- replay -----------------------------------------------------------------------------------


def perform(case: CancellationCase, command: str, now: datetime, rules: Policy) -> None:
    """One command on the latest request or filing, as a user or timer would send it."""
    request, filing = f"o-1.r{len(case.requests)}", f"o-1.f{len(case.filings)}"
    match command:
        case "request":
            case.request_by_buyer(BUYER, CHANGED_MIND, None, now, rules)
        case "decline":
            case.decline_request(SELLER, request, None)
        case "window":
            case.response_window_passed(request, now)
        case "file":
            case.file_by_seller(SELLER, OUT_OF_STOCK, None, rules)
        case "file_named":
            case.file_by_seller(SELLER, OUT_OF_STOCK, None, rules, request)
        case "approve":
            case.approve(filing, "op-1", rules)
        case "reject":
            case.reject(filing, "op-1", None, rules)
        case _:
            end_order(case, "shipped" if command == "ship" else "cancelled")


COMMANDS = st.sampled_from(
    ["request", "decline", "window", "file", "file_named", "approve", "reject", "ship", "cancel"]
)


@settings(max_examples=200, deadline=None)
@given(
    commands=st.lists(st.tuples(COMMANDS, st.integers(0, 72)), max_size=12),
    cod=st.booleans(),
    rules=st.builds(
        policy,
        on_no_response=st.sampled_from(["lapse", "auto_approve"]),
        review_mode=st.sampled_from(["manual", "auto"]),
        auto_approve_within_after_payment=st.sampled_from([None, timedelta(hours=4)]),
    ),
)
def test_replaying_the_recorded_events_rebuilds_the_same_case(
    commands: list[tuple[str, int]], cod: bool, rules: Policy
) -> None:
    case = cod_case() if cod else paid_case()
    for name, hours in commands:
        with suppress(DomainError):
            perform(case, name, PAID_AT + timedelta(hours=hours), rules)

    rebuilt = replayed(case)
    assert state_of(rebuilt) == state_of(case)
    assert rebuilt.version == len(case.pending)
    assert sum(isinstance(e, SellerCancelApproved) for e in case.pending) <= 1
