"""The seller-dispute service's HTTP edge: requests, filings, platform decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from services.seller_dispute import handlers, review_queue
from services.seller_dispute.domain import BuyerRequest, CancellationCase, SellerFiling
from services.seller_dispute.handlers import (
    DecideFiling,
    DeclineRequest,
    DisputeContext,
    FileCancellation,
    RequestCancellation,
)
from shared.contracts.events import BuyerCancelReason, SellerCancelReason
from shared.contracts.limits import MAX_NOTE_LENGTH
from shared.kernel.auth import Role
from shared.kernel.fields import identifier, text
from shared.kernel.http import PROBLEM_RESPONSES, CallerDep, PathId, RequestBody, require_role
from shared.kernel.runtime import context_of

Context = Annotated[DisputeContext, Depends(context_of(DisputeContext))]
router = APIRouter(tags=["seller cancellations"], responses=PROBLEM_RESPONSES)


class BuyerRequestBody(RequestBody):
    reason: BuyerCancelReason
    note: str | None = text(
        MAX_NOTE_LENGTH, default=None, description="required when reason is other"
    )


class Decline(RequestBody):
    note: str | None = text(MAX_NOTE_LENGTH, default=None)


class FilingBody(RequestBody):
    reason: SellerCancelReason
    note: str | None = text(MAX_NOTE_LENGTH, default=None)
    request_id: str | None = identifier(
        default=None, description="the buyer request this answers, if any"
    )


class Decision(RequestBody):
    note: str | None = text(MAX_NOTE_LENGTH, default=None)


class CaseReply(BaseModel):
    order_id: str
    requests: list[BuyerRequest]
    filings: list[SellerFiling]
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
        "requests": list(case.requests),
        "filings": list(case.filings),
        "approved_id": case.approved_id,
        "closed_because": case.closed_because,
    }


@router.post(
    "/orders/{order_id}/cancellation-requests",
    status_code=201,
    summary="ask the seller to cancel a paid order (buyer)",
)
async def request_cancellation(
    order_id: PathId, body: BuyerRequestBody, caller: CallerDep, ctx: Context
) -> RequestReply:
    require_role(caller, Role.BUYER)
    command = RequestCancellation(caller, order_id, body.reason, body.note, at=ctx.clock.now())
    case = await handlers.request_cancellation(ctx, command)
    request = case.requests[-1]
    return RequestReply(
        request_id=request.request_id, respond_by=request.respond_by, **_case_reply(case)
    )


@router.post(
    "/cancellation-requests/{request_id}/decline", summary="decline a buyer's request (seller)"
)
async def decline_request(
    request_id: PathId, caller: CallerDep, ctx: Context, body: Decline | None = None
) -> CaseReply:
    require_role(caller, Role.SELLER)
    note = body.note if body else None
    command = DeclineRequest(caller, request_id, note, at=ctx.clock.now())
    case = await handlers.decline_request(ctx, command)
    return CaseReply(**_case_reply(case))


@router.post(
    "/orders/{order_id}/seller-cancellations",
    status_code=201,
    summary="file a cancellation with the platform (seller)",
)
async def file_cancellation(
    order_id: PathId, body: FilingBody, caller: CallerDep, ctx: Context
) -> FilingReply:
    require_role(caller, Role.SELLER)
    command = FileCancellation(
        caller, order_id, body.reason, body.note, body.request_id, at=ctx.clock.now()
    )
    case = await handlers.file_cancellation(ctx, command)
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
    filing_id: PathId, caller: CallerDep, ctx: Context, body: Decision | None = None
) -> CaseReply:
    return await _decide(ctx, DecideFiling(caller, filing_id, True, _note(body), ctx.clock.now()))


@router.post("/seller-cancellations/{filing_id}/reject", summary="reject a filing (operator)")
async def reject(
    filing_id: PathId, caller: CallerDep, ctx: Context, body: Decision | None = None
) -> CaseReply:
    return await _decide(ctx, DecideFiling(caller, filing_id, False, _note(body), ctx.clock.now()))


def _note(body: Decision | None) -> str | None:
    return body.note if body else None


async def _decide(ctx: DisputeContext, command: DecideFiling) -> CaseReply:
    require_role(command.caller, Role.OPERATOR)
    return CaseReply(**_case_reply(await handlers.decide(ctx, command)))


@router.get("/cases/{order_id}", summary="the cancellation case of an order (owner, operator)")
async def get_case(order_id: PathId, caller: CallerDep, ctx: Context) -> CaseView:
    case = await handlers.visible_case(ctx, caller, order_id)
    return CaseView(
        buyer_id=case.facts.buyer_id,
        seller_id=case.facts.seller_id,
        order_paid=case.facts.paid_at is not None,
        order_shipped=case.facts.shipped,
        order_cancelled=case.facts.cancelled,
        **_case_reply(case),
    )
