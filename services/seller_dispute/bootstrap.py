"""The seller-dispute service's composition root."""

from __future__ import annotations

from functools import partial

from services.seller_dispute import handlers, review_queue
from services.seller_dispute.api import router
from services.seller_dispute.handlers import CaseRepository, DisputeContext
from shared.contracts.events import DISPUTE_TOPIC, ORDER_TOPIC
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring


def wire(runtime: Runtime) -> Wiring:
    cases = CaseRepository(runtime.store, runtime.registry, runtime.clock, runtime.documents)
    ctx = DisputeContext(cases=cases, clock=runtime.clock, policy=runtime.settings.policy)
    return Wiring(
        context=ctx,
        subscriptions=[
            Subscription((ORDER_TOPIC,), "facts", partial(handlers.on_order_event, ctx)),
            Subscription(
                (DISPUTE_TOPIC,), "review-queue", partial(review_queue.project, runtime.documents)
            ),
        ],
        on_timer=partial(handlers.on_timer, ctx),
    )


SPEC = ServiceSpec(
    name="seller-dispute",
    title="yellowcart seller-dispute service",
    routers=[router],
    wire=wire,
)
