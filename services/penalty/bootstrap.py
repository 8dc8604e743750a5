"""The penalty service's composition root."""

from __future__ import annotations

from functools import partial

from services.penalty import handlers
from services.penalty.api import router
from services.penalty.domain import SellerRecord
from services.penalty.handlers import PenaltyContext
from shared.contracts.events import ORDER_TOPIC
from shared.kernel.application import Repository
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring


def wire(runtime: Runtime) -> Wiring:
    ctx = PenaltyContext(
        sellers=Repository(runtime.store, SellerRecord, runtime.registry, "penalty", runtime.clock),
        clock=runtime.clock,
        policy=runtime.settings.policy,
    )
    return Wiring(
        context=ctx,
        subscriptions=[
            Subscription((ORDER_TOPIC,), "records", partial(handlers.on_order_event, ctx))
        ],
        on_timer=partial(handlers.on_timer, ctx),
    )


SPEC = ServiceSpec(name="penalty", title="yellowcart penalty service", routers=[router], wire=wire)
