"""The order service's composition root."""

from __future__ import annotations

from functools import partial

from services.order import handlers
from services.order.api import router
from services.order.domain import Order
from services.order.handlers import OrderContext
from shared.contracts.events import DISPUTE_TOPIC, PAYMENT_TOPIC, TOPICS
from shared.kernel.application import Repository
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring


def wire(runtime: Runtime) -> Wiring:
    ctx = OrderContext(
        orders=Repository(runtime.store, Order, runtime.registry, "order", runtime.clock),
        store=runtime.store,
        views=runtime.documents,
        clock=runtime.clock,
        policy=runtime.settings.policy,
    )
    return Wiring(
        context=ctx,
        subscriptions=[
            Subscription(
                (PAYMENT_TOPIC, DISPUTE_TOPIC), "reactions", partial(handlers.react_to, ctx)
            ),
            Subscription(TOPICS, "view", partial(handlers.project, ctx)),
        ],
    )


SPEC = ServiceSpec(name="order", title="yellowcart order service", routers=[router], wire=wire)
