"""The four services by name, each with its composition root: plain imports, no lookup by
string, so a reader and the type checker can follow from a name to its code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.order.bootstrap import bootstrap as order
from services.payment.bootstrap import bootstrap as payment
from services.penalty.bootstrap import bootstrap as penalty
from services.seller_dispute.bootstrap import bootstrap as seller_dispute
from shared.contracts.policy import Policy
from shared.kernel.runtime import ServiceSpec

COMPOSITION_ROOTS: dict[str, Callable[[Policy], ServiceSpec]] = {
    "order": order,
    "payment": payment,
    "seller-dispute": seller_dispute,
    "penalty": penalty,
}
SERVICES = tuple(COMPOSITION_ROOTS)


def spec_of(name: str, policy: Policy) -> ServiceSpec:
    try:
        bootstrap = COMPOSITION_ROOTS[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}") from None
    return bootstrap(policy)


def published_routers() -> dict[str, list[Any]]:
    """Each service's HTTP routers: what the gateway publishes (routes don't vary by policy)."""
    policy = Policy()
    return {name: list(spec_of(name, policy).routers) for name in SERVICES}
