"""The order service's composition root: its context, subscriptions and routes."""

from __future__ import annotations

from functools import partial

from services.order import handlers
from services.order.api import router
from services.order.domain import Order
from services.order.handlers import OrderContext
from services.order.projection import ORDER_VIEW
from shared.contracts.events import (
    DISPUTE_TOPIC,
    PAYMENT_TOPIC,
    TOPICS,
    CheckpointSealed,
    default_registry,
)
from shared.contracts.policy import Policy
from shared.kernel.application import Repository
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring

NAME = "order"


def bootstrap(policy: Policy) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        orders = Repository(runtime.store, Order, runtime.registry, NAME)
        ctx = OrderContext(orders, runtime.store, runtime.documents, runtime.clock, policy)
        reactions = partial(handlers.react_to, ctx)
        return Wiring(
            ctx,
            [
                Subscription((PAYMENT_TOPIC, DISPUTE_TOPIC), "reactions", reactions),
                Subscription.projection(TOPICS, "view", runtime.documents, ORDER_VIEW),
            ],
        )

    return ServiceSpec(
        NAME,
        "yellowcart order service",
        [router],
        default_registry,
        wire,
        checkpoint_event=CheckpointSealed.model_validate,
    )
