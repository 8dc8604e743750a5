"""The penalty service's composition root: its context, subscription, timers and routes."""

from __future__ import annotations

from functools import partial

from services.penalty import handlers
from services.penalty.api import router
from services.penalty.domain import SellerRecord
from services.penalty.handlers import PenaltyContext
from shared.contracts.events import ORDER_TOPIC, CheckpointSealed, default_registry
from shared.contracts.policy import Policy
from shared.kernel.application import Repository
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring

NAME = "penalty"
SELLER_CACHE = 10_000  # seller records kept in memory: a sale's sellers, each read incrementally


def bootstrap(policy: Policy) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        sellers = Repository(
            runtime.store, SellerRecord, runtime.registry, NAME, cache_size=SELLER_CACHE
        )
        ctx = PenaltyContext(sellers, runtime.clock, policy)
        consumer = Subscription((ORDER_TOPIC,), "records", partial(handlers.on_order_event, ctx))
        return Wiring(ctx, [consumer], on_timer=partial(handlers.on_timer, ctx))

    return ServiceSpec(
        NAME,
        "yellowcart penalty service",
        [router],
        default_registry,
        wire,
        checkpoint_event=CheckpointSealed.model_validate,
    )
