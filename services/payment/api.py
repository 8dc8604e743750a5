"""The payment service's HTTP edge: signed gateway callbacks and the payment view."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from services.payment import handlers
from services.payment.domain import IntentStatus, Outcome
from services.payment.handlers import PaymentContext, ReceivePayment
from shared.contracts.events import (
    LatePaymentReceived,
    PaymentMethod,
    PaymentReceived,
    RefundIssued,
)
from shared.kernel.http import (
    PROBLEM_RESPONSES,
    CallerDep,
    HTTPProblem,
    RequestBody,
    signature_matches,
)
from shared.kernel.runtime import context_of

Context = Annotated[PaymentContext, Depends(context_of(PaymentContext))]
router = APIRouter(tags=["payments"], responses=PROBLEM_RESPONSES)
SIGNATURE_HEADER = "X-Yellowcart-Signature"


class GatewayCallback(RequestBody):
    """What the payment gateway posts when money arrives (signed: HMAC-SHA256 of the body)."""

    order_id: str = Field(min_length=1, max_length=64)
    gateway_reference: str = Field(min_length=1, max_length=128)
    amount: int = Field(gt=0)
    currency: Literal["IDR"] = "IDR"
    paid_at: AwareDatetime


class CallbackReply(BaseModel):
    order_id: str
    gateway_reference: str
    outcome: Literal["accepted", "refunded", "duplicate"]


@router.post(
    "/payments/callbacks",
    summary="the gateway reports a payment (signed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GatewayCallback.model_json_schema()}},
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "hex HMAC-SHA256 of the raw body with the gateway secret",
                "schema": {"type": "string"},
            }
        ],
    },
)
async def payment_callback(
    request: Request,
    ctx: Context,
    signature: Annotated[
        str | None, Header(alias=SIGNATURE_HEADER, include_in_schema=False)
    ] = None,
) -> CallbackReply:
    body = await request.body()
    if not signature_matches(request.app.state.settings.gateway_secret, body, signature):
        raise HTTPProblem(
            401, "Unauthorized", f"missing or wrong {SIGNATURE_HEADER}: callback not recorded"
        )
    try:
        callback = GatewayCallback.model_validate_json(body)
    except ValidationError as error:
        errors = [
            {"location": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()
        ]
        raise HTTPProblem(
            422,
            "Invalid request",
            "; ".join(f"{e['location']}: {e['message']}" for e in errors),
            errors=errors,
        ) from None
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
    refunds: list[RefundIssued]
    policy_version: str


@router.get("/payments/{order_id}", summary="payment state, deadline, refunds (owner, operator)")
async def get_payment(order_id: str, caller: CallerDep, ctx: Context) -> PaymentView:
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
        refunds=list(intent.refunds),
        policy_version=requested.policy_version,
    )
