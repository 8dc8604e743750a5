"""The seller-dispute service's composition root: context, subscriptions, timers, routes."""

from __future__ import annotations

from functools import partial

from services.seller_dispute import handlers
from services.seller_dispute.api import router
from services.seller_dispute.handlers import CaseRepository, DisputeContext
from services.seller_dispute.review_queue import REVIEW_QUEUE
from shared.contracts.events import DISPUTE_TOPIC, ORDER_TOPIC, CheckpointSealed, default_registry
from shared.contracts.policy import Policy
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring

NAME = "seller-dispute"


def bootstrap(policy: Policy) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        cases = CaseRepository(runtime.store, runtime.registry, runtime.documents)
        ctx = DisputeContext(cases, runtime.clock, policy)
        facts = Subscription((ORDER_TOPIC,), "facts", partial(handlers.on_order_event, ctx))
        queue = Subscription.projection(
            (DISPUTE_TOPIC,), "review-queue", runtime.documents, REVIEW_QUEUE
        )
        consumers = [facts, queue]
        return Wiring(ctx, consumers, on_timer=partial(handlers.on_timer, ctx))

    return ServiceSpec(
        NAME,
        "yellowcart seller-dispute service",
        [router],
        default_registry,
        wire,
        checkpoint_event=CheckpointSealed.model_validate,
    )
