"""The payment service's composition root."""

from __future__ import annotations

from functools import partial

from services.payment import handlers
from services.payment.api import router
from services.payment.domain import PaymentIntent
from services.payment.handlers import PaymentContext
from shared.contracts.events import ORDER_TOPIC
from shared.kernel.application import Repository
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring


def wire(runtime: Runtime) -> Wiring:
    ctx = PaymentContext(
        intents=Repository(
            runtime.store, PaymentIntent, runtime.registry, "payment", runtime.clock
        ),
        clock=runtime.clock,
        policy=runtime.settings.policy,
    )
    return Wiring(
        context=ctx,
        subscriptions=[
            Subscription((ORDER_TOPIC,), "reactions", partial(handlers.on_order_event, ctx))
        ],
        on_timer=partial(handlers.on_timer, ctx),
    )


SPEC = ServiceSpec(name="payment", title="yellowcart payment service", routers=[router], wire=wire)
