"""The seller-dispute service's composition root: context, subscriptions, timers, routes."""

from __future__ import annotations

from functools import partial

from services.seller_dispute import handlers
from services.seller_dispute.api import router
from services.seller_dispute.handlers import CaseRepository, DisputeContext
from services.seller_dispute.review_queue import REVIEW_QUEUE
from shared.contracts.events import DISPUTE_TOPIC, ORDER_TOPIC, default_registry
from shared.contracts.policy import Policy
from shared.kernel.projection import projector
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring

NAME = "seller-dispute"


def bootstrap(policy: Policy) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        cases = CaseRepository(runtime.store, runtime.registry, runtime.documents)
        ctx = DisputeContext(cases=cases, clock=runtime.clock, policy=policy)
        return Wiring(
            context=ctx,
            subscriptions=[
                Subscription((ORDER_TOPIC,), "facts", partial(handlers.on_order_event, ctx)),
                Subscription(
                    (DISPUTE_TOPIC,), "review-queue", projector(runtime.documents, REVIEW_QUEUE)
                ),
            ],
            on_timer=partial(handlers.on_timer, ctx),
        )

    return ServiceSpec(
        name=NAME,
        title="yellowcart seller-dispute service",
        routers=[router],
        registry=default_registry,
        wire=wire,
    )
