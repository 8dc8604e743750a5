"""Payment use cases: open an intent per order, take gateway callbacks, expire, refund."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.payment.domain import PAYMENT_DEADLINE_TIMER, Outcome, PaymentIntent
from shared.contracts.events import OrderCancelled, OrderPlaced
from shared.contracts.policy import Policy
from shared.kernel.aggregate import NotFound
from shared.kernel.application import Repository, handle_event, react
from shared.kernel.auth import Caller, Role
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import DueTimer, DuplicateCausation


@dataclass
class PaymentContext:
    intents: Repository[PaymentIntent]
    clock: Clock
    policy: Policy


async def on_order_event(ctx: PaymentContext, envelope: Envelope, event: DomainEvent) -> None:
    match event:
        case OrderPlaced():
            # The deadline counts from the moment the order was placed (the event's time), so
            # the order service can tell the buyer the same deadline from the same policy.
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

            await handle_event(
                ctx.intents,
                event.order_id,
                open_intent,
                causation_id=envelope.event_id,
                correlation_id=envelope.correlation_id,
            )
        case OrderCancelled():
            now = ctx.clock.now()
            await react(ctx.intents, envelope, event.order_id, lambda i: i.on_order_cancelled(now))


async def on_timer(ctx: PaymentContext, timer: DueTimer) -> None:
    if timer.name != PAYMENT_DEADLINE_TIMER:
        return
    now = ctx.clock.now()
    order_id = str(timer.data["aggregate_id"])

    def expire(intent: PaymentIntent | None) -> PaymentIntent | None:
        if intent is None:
            return None
        intent.expire(now)
        return intent

    await handle_event(
        ctx.intents, order_id, expire, causation_id=timer.timer_id, correlation_id=order_id
    )


async def receive_callback(
    ctx: PaymentContext, order_id: str, gateway_reference: str, amount: int, paid_at: datetime
) -> Outcome:
    """A signed gateway callback; idempotent by gateway reference."""
    intent = await ctx.intents.get(order_id)
    if intent is None:
        raise NotFound(f"no payment intent for order {order_id}", order_id=order_id)
    outcome = intent.receive_payment(gateway_reference, amount, paid_at)
    try:
        await ctx.intents.save(
            intent, causation_id=f"gateway:{gateway_reference}", correlation_id=order_id
        )
    except DuplicateCausation:
        return Outcome.DUPLICATE
    return outcome


async def load_visible(ctx: PaymentContext, caller: Caller, order_id: str) -> PaymentIntent:
    intent = await ctx.intents.get(order_id)
    if intent is not None:
        requested = intent.requested
        if (
            caller.role is Role.OPERATOR
            or (caller.role is Role.BUYER and requested.buyer_id == caller.sub)
            or (caller.role is Role.SELLER and requested.seller_id == caller.sub)
        ):
            return intent
    raise NotFound(
        f"no payment for order {order_id} (cash-on-delivery orders have none)",
        order_id=order_id,
    )
