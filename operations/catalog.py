"""The four services by name; specs are imported only when asked for (no work at import)."""

from __future__ import annotations

import importlib

from shared.kernel.runtime import ServiceSpec

SERVICES = ("order", "payment", "seller-dispute", "penalty")


def spec_of(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{name.replace('-', '_')}.bootstrap")
    spec: ServiceSpec = module.SPEC
    return spec
