"""Payment use cases: open an intent per order, take gateway callbacks, expire, refund."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.payment.domain import PAYMENT_DEADLINE_TIMER, Outcome, PaymentIntent
from shared.contracts.events import OrderCancelled, OrderPlaced
from shared.contracts.policy import Policy
from shared.kernel.aggregate import NotFound
from shared.kernel.application import Cause, Repository, handle_event, react
from shared.kernel.auth import Caller
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import DueTimer, DuplicateCausation

REACTIONS = "payment.reactions"  # handler names in the de-duplication key of their commits
TIMERS = "payment.timers"


@dataclass
class PaymentContext:
    intents: Repository[PaymentIntent]
    clock: Clock
    policy: Policy


@dataclass(frozen=True)
class ReceivePayment:
    """A signed gateway callback: money arrived for an order."""

    order_id: str
    gateway_reference: str
    amount: int
    paid_at: datetime
    at: datetime


async def on_order_event(ctx: PaymentContext, envelope: Envelope, event: DomainEvent) -> None:
    cause = Cause.event(REACTIONS, envelope, ctx.clock.now())
    match event:
        case OrderPlaced():
            # The deadline counts from the moment the order was placed (the event's time), so
            # the order service tells the buyer the same deadline from the same policy.
            def open_intent(existing: PaymentIntent | None) -> PaymentIntent | None:
                if existing is not None:
                    return None
                return PaymentIntent.open(
                    event.order_id,
                    event.buyer_id,
                    event.seller_id,
                    event.total_amount,
                    event.payment_method,
                    envelope.occurred_at,
                    ctx.policy,
                )

            await handle_event(ctx.intents, event.order_id, open_intent, cause)
        case OrderCancelled():
            await react(
                ctx.intents, cause, event.order_id, lambda i: i.on_order_cancelled(cause.at)
            )


async def on_timer(ctx: PaymentContext, timer: DueTimer) -> None:
    if timer.name != PAYMENT_DEADLINE_TIMER:
        return
    order_id = str(timer.data["aggregate_id"])
    cause = Cause.timer(TIMERS, timer, order_id, ctx.clock.now())
    await react(ctx.intents, cause, order_id, lambda intent: intent.expire(cause.at))


async def receive_callback(ctx: PaymentContext, command: ReceivePayment) -> Outcome:
    """Idempotent by gateway reference."""
    intent = await ctx.intents.get(command.order_id)
    if intent is None:
        raise NotFound(f"no payment intent for order {command.order_id}", order_id=command.order_id)
    outcome = intent.receive_payment(command.gateway_reference, command.amount, command.paid_at)
    try:
        await ctx.intents.save(
            intent,
            at=command.at,
            causation_id=f"gateway:{command.gateway_reference}",
            correlation_id=command.order_id,
        )
    except DuplicateCausation:
        return Outcome.DUPLICATE
    return outcome


async def load_visible(ctx: PaymentContext, caller: Caller, order_id: str) -> PaymentIntent:
    intent = await ctx.intents.get(order_id)
    if intent is not None:
        requested = intent.requested
        if caller.may_see(buyer_id=requested.buyer_id, seller_id=requested.seller_id):
            return intent
    raise NotFound(
        f"no payment for order {order_id} (cash-on-delivery orders have none)",
        order_id=order_id,
    )
