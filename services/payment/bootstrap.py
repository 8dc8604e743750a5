"""The payment service's composition root: its context, subscription, timers and routes."""

from __future__ import annotations

from functools import partial

from services.payment import handlers
from services.payment.api import router
from services.payment.domain import PaymentIntent
from services.payment.handlers import PaymentContext
from shared.contracts.events import ORDER_TOPIC, CheckpointSealed, default_registry
from shared.contracts.policy import Policy
from shared.kernel.application import Repository
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring

NAME = "payment"


def bootstrap(policy: Policy) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        intents = Repository(runtime.store, PaymentIntent, runtime.registry, NAME)
        ctx = PaymentContext(intents, runtime.clock, policy)
        consumer = Subscription((ORDER_TOPIC,), "reactions", partial(handlers.on_order_event, ctx))
        return Wiring(ctx, [consumer], on_timer=partial(handlers.on_timer, ctx))

    return ServiceSpec(
        NAME,
        "yellowcart payment service",
        [router],
        default_registry,
        wire,
        checkpoint_event=CheckpointSealed.model_validate,
    )
