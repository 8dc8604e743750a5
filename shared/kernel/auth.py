"""Bearer tokens (JWT, HS256): who is calling (`sub`) and as what (`role`).

In the embedded default a development secret signs tokens; settings refuse it anywhere else.
`mint_token` backs `yellowcart token`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

import jwt
from pydantic import BaseModel, ConfigDict


class Role(StrEnum):
    BUYER = "buyer"
    SELLER = "seller"
    OPERATOR = "operator"


class Caller(BaseModel):
    model_config = ConfigDict(frozen=True)

    sub: str
    role: Role

    def may_see(self, *, buyer_id: str | None, seller_id: str | None) -> bool:
        """The one visibility rule: an operator sees every order, a buyer only its own, a seller
        only its shop's. Whoever may not see an order is told it does not exist (404)."""
        if self.role is Role.OPERATOR:
            return True
        owner = buyer_id if self.role is Role.BUYER else seller_id
        return owner is not None and owner == self.sub


class InvalidToken(Exception):
    """The token is missing, malformed, expired, forged or names an unknown role."""


ALGORITHM = "HS256"


def mint_token(secret: str, sub: str, role: Role, now: datetime, ttl: timedelta) -> str:
    claims = {"sub": sub, "role": role.value, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Caller:
    """The caller a token names. A token verified before is not verified again (a buyer sends
    the same one with every request) until it expires; a token that fails is never kept."""
    caller, expires_at = _verified(secret, token)
    if time.time() >= expires_at:
        raise InvalidToken("Signature has expired")
    return caller


@lru_cache(maxsize=4096)
def _verified(secret: str, token: str) -> tuple[Caller, float]:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
        return Caller(sub=str(claims["sub"]), role=Role(str(claims.get("role")))), float(
            claims["exp"]
        )
    except (jwt.PyJWTError, ValueError) as error:
        raise InvalidToken(str(error)) from None
