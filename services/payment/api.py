"""The payment service's HTTP edge: signed gateway callbacks and the payment view."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field

from services.payment import handlers
from services.payment.domain import IntentStatus, Outcome
from services.payment.handlers import PaymentContext, ReceivePayment
from shared.contracts.events import (
    LatePaymentReceived,
    PaymentAmountMismatched,
    PaymentMethod,
    PaymentReceived,
    RefundIssued,
)
from shared.contracts.limits import MAX_PAYMENT_AMOUNT, MAX_REFERENCE_LENGTH
from shared.kernel.fields import Instant, identifier, text, whole
from shared.kernel.http import (
    PROBLEM_RESPONSES,
    CallerDep,
    HTTPProblem,
    PathId,
    RequestBody,
    parse_body,
)
from shared.kernel.runtime import context_of
from shared.kernel.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackRefused,
    verify_callback,
)

Context = Annotated[PaymentContext, Depends(context_of(PaymentContext))]
router = APIRouter(tags=["payments"], responses=PROBLEM_RESPONSES)


class GatewayCallback(RequestBody):
    """What the payment provider posts when money arrives (signed: see `shared.kernel.webhooks`).

    Every reported payment is recorded: the one payment of an open intent is accepted; money
    for a settled intent, or of another amount than is due, is recorded and refunded in full."""

    order_id: str = identifier()
    gateway_reference: str = text(MAX_REFERENCE_LENGTH)
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT, description="rupiah received")
    currency: Literal["IDR"] = "IDR"
    paid_at: Instant


class CallbackReply(BaseModel):
    order_id: str
    gateway_reference: str
    outcome: Literal["accepted", "refunded", "duplicate"] = Field(
        description="accepted: the order is paid; refunded: recorded and refunded in full "
        "(late, or not the amount due); duplicate: this gateway reference was reported before"
    )


_SIGNED_HEADERS = [
    {
        "name": TIMESTAMP_HEADER,
        "in": "header",
        "required": True,
        "description": "Unix seconds when the provider signed; refused beyond the tolerance",
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    },
    {
        "name": SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "description": "hex HMAC-SHA256 of `<timestamp>.<raw body>` with the provider secret",
        "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"},
    },
]


@router.post(
    "/payments/callbacks",
    summary="the payment provider reports a payment (signed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GatewayCallback.model_json_schema()}},
        },
        "parameters": _SIGNED_HEADERS,
    },
)
async def payment_callback(
    request: Request,
    ctx: Context,
    timestamp: Annotated[
        str | None, Header(alias=TIMESTAMP_HEADER, include_in_schema=False)
    ] = None,
    signature: Annotated[
        str | None, Header(alias=SIGNATURE_HEADER, include_in_schema=False)
    ] = None,
) -> CallbackReply:
    body = await request.body()
    settings = request.app.state.settings
    try:
        verify_callback(
            settings.gateway_secret,
            body,
            timestamp=timestamp,
            signature=signature,
            now=ctx.clock.now(),
            tolerance=timedelta(seconds=settings.callback_tolerance_s),
        )
    except CallbackRefused as refused:
        raise HTTPProblem(401, "Unauthorized", f"{refused}; callback not recorded") from None
    callback = parse_body(GatewayCallback, body)
    command = ReceivePayment(
        order_id=callback.order_id,
        gateway_reference=callback.gateway_reference,
        amount=callback.amount,
        paid_at=callback.paid_at,
        at=ctx.clock.now(),
    )
    outcome = await handlers.receive_callback(ctx, command)
    intent = await ctx.intents.get(callback.order_id)
    refunded = intent is not None and any(
        refund.gateway_reference == callback.gateway_reference for refund in intent.refunds
    )
    reply: Literal["accepted", "refunded", "duplicate"] = (
        "duplicate" if outcome is Outcome.DUPLICATE else "refunded" if refunded else "accepted"
    )
    return CallbackReply(
        order_id=callback.order_id, gateway_reference=callback.gateway_reference, outcome=reply
    )


class PaymentView(BaseModel):
    order_id: str
    status: IntentStatus
    amount: int
    currency: Literal["IDR"] = "IDR"
    method: PaymentMethod
    deadline_at: datetime
    payment_code: str | None
    virtual_account: str | None
    payment: PaymentReceived | None
    late_payments: list[LatePaymentReceived]
    mismatched_payments: list[PaymentAmountMismatched]
    refunds: list[RefundIssued]
    policy_version: str


@router.get("/payments/{order_id}", summary="payment state, deadline, refunds (owner, operator)")
async def get_payment(order_id: PathId, caller: CallerDep, ctx: Context) -> PaymentView:
    intent = await handlers.load_visible(ctx, caller, order_id)
    requested = intent.requested
    return PaymentView(
        order_id=order_id,
        status=intent.status,
        amount=requested.amount,
        method=requested.method,
        deadline_at=requested.deadline_at,
        payment_code=requested.payment_code,
        virtual_account=requested.virtual_account,
        payment=intent.payment,
        late_payments=list(intent.late_payments),
        mismatched_payments=list(intent.mismatched_payments),
        refunds=list(intent.refunds),
        policy_version=requested.policy_version,
    )
