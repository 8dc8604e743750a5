"""The example identities of the embedded run: `yellowcart up` prints a token for each, and the
console (in embedded mode only) lets a person sign in as one of them with a click."""

from __future__ import annotations

from shared.kernel.auth import Role

EXAMPLE_USERS = ((Role.BUYER, "buyer-1"), (Role.SELLER, "shop-1"), (Role.OPERATOR, "operator-1"))
