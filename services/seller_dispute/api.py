"""The seller-dispute service's HTTP edge: requests, filings, platform decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from services.seller_dispute import handlers, review_queue
from services.seller_dispute.domain import CancellationCase
from services.seller_dispute.handlers import DisputeContext
from shared.contracts.events import BuyerCancelReason, SellerCancelReason
from shared.kernel.auth import Role
from shared.kernel.http import PROBLEM_RESPONSES, CallerDep, require_role
from shared.kernel.runtime import context_of

Context = Annotated[DisputeContext, Depends(context_of(DisputeContext))]
router = APIRouter(tags=["seller cancellations"], responses=PROBLEM_RESPONSES)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestCancellation(_Body):
    reason: BuyerCancelReason
    note: str | None = Field(None, max_length=500, description="required when reason is other")


class Decline(_Body):
    note: str | None = Field(None, max_length=500)


class FileCancellation(_Body):
    reason: SellerCancelReason
    note: str | None = Field(None, max_length=500)
    request_id: str | None = Field(None, description="the buyer request this answers, if any")


class Decision(_Body):
    note: str | None = Field(None, max_length=500)


class CaseReply(BaseModel):
    order_id: str
    requests: list[dict[str, Any]]
    filings: list[dict[str, Any]]
    approved_id: str | None
    closed_because: str | None


class CaseView(CaseReply):
    buyer_id: str | None
    seller_id: str | None
    order_paid: bool
    order_shipped: bool
    order_cancelled: bool


class RequestReply(CaseReply):
    request_id: str
    respond_by: datetime


class FilingReply(CaseReply):
    filing_id: str


def _case_reply(case: CancellationCase) -> dict[str, Any]:
    return {
        "order_id": case.id,
        "requests": [vars(request) for request in case.requests],
        "filings": [vars(filing) for filing in case.filings],
        "approved_id": case.approved_id,
        "closed_because": case.closed_because,
    }


@router.post(
    "/orders/{order_id}/cancellation-requests",
    status_code=201,
    summary="ask the seller to cancel a paid order (buyer)",
)
async def request_cancellation(
    order_id: str, body: RequestCancellation, caller: CallerDep, ctx: Context
) -> RequestReply:
    require_role(caller, Role.BUYER)
    case = await handlers.request_cancellation(ctx, caller, order_id, body.reason, body.note)
    request = case.requests[-1]
    return RequestReply(
        request_id=request.request_id, respond_by=request.respond_by, **_case_reply(case)
    )


@router.post(
    "/cancellation-requests/{request_id}/decline", summary="decline a buyer's request (seller)"
)
async def decline_request(
    request_id: str, caller: CallerDep, ctx: Context, body: Decline | None = None
) -> CaseReply:
    require_role(caller, Role.SELLER)
    case = await handlers.decline_request(ctx, caller, request_id, body.note if body else None)
    return CaseReply(**_case_reply(case))


@router.post(
    "/orders/{order_id}/seller-cancellations",
    status_code=201,
    summary="file a cancellation with the platform (seller)",
)
async def file_cancellation(
    order_id: str, body: FileCancellation, caller: CallerDep, ctx: Context
) -> FilingReply:
    require_role(caller, Role.SELLER)
    case = await handlers.file_cancellation(
        ctx, caller, order_id, body.reason, body.note, body.request_id
    )
    return FilingReply(filing_id=case.filings[-1].filing_id, **_case_reply(case))


class QueuedFiling(BaseModel):
    filing_id: str
    order_id: str
    seller_id: str
    reason: str
    note: str | None
    request_id: str | None
    review_mode: str
    filed_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None


@router.get("/seller-cancellations", summary="the platform's review queue (operator)")
async def review_queue_route(
    caller: CallerDep,
    ctx: Context,
    status: Annotated[
        Literal["under_review", "approved", "rejected", "closed", "all"], Query()
    ] = "under_review",
) -> list[QueuedFiling]:
    require_role(caller, Role.OPERATOR)
    filings = await review_queue.listed(ctx.cases.documents, status)
    return [QueuedFiling.model_validate(filing) for filing in filings]


@router.post("/seller-cancellations/{filing_id}/approve", summary="approve a filing (operator)")
async def approve(
    filing_id: str, caller: CallerDep, ctx: Context, body: Decision | None = None
) -> CaseReply:
    require_role(caller, Role.OPERATOR)
    case = await handlers.decide(ctx, caller, filing_id, True, body.note if body else None)
    return CaseReply(**_case_reply(case))


@router.post("/seller-cancellations/{filing_id}/reject", summary="reject a filing (operator)")
async def reject(
    filing_id: str, caller: CallerDep, ctx: Context, body: Decision | None = None
) -> CaseReply:
    require_role(caller, Role.OPERATOR)
    case = await handlers.decide(ctx, caller, filing_id, False, body.note if body else None)
    return CaseReply(**_case_reply(case))


@router.get("/cases/{order_id}", summary="the cancellation case of an order (owner, operator)")
async def get_case(order_id: str, caller: CallerDep, ctx: Context) -> CaseView:
    case = await handlers.visible_case(ctx, caller, order_id)
    return CaseView(
        buyer_id=case.facts.buyer_id,
        seller_id=case.facts.seller_id,
        order_paid=case.facts.paid_at is not None,
        order_shipped=case.facts.shipped,
        order_cancelled=case.facts.cancelled,
        **_case_reply(case),
    )
