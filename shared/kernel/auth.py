"""Bearer tokens (JWT): who is calling (`sub`) and as what (`role`).

Two modes, chosen by settings:
- **production**: tokens signed by the operator's identity provider with an asymmetric key
  (EdDSA or RS256), checked against a JWKS — a file, re-read when it changes, or a URL,
  fetched when a token names a key id (`kid`) not seen yet. Rotating a key is: publish the
  new public key in the JWKS beside the old one, sign new tokens with it, and remove the old
  key once its tokens have expired (docs/ARCHITECTURE.md, "Tokens");
- **embedded**: HS256 with a shared development secret, so `yellowcart up` works out of the box.

Every token must name the configured issuer (`iss`) and audience (`aud`), carry `exp`, and
is refused before `nbf`; clocks may differ by the leeway. A refused token gets one sentence a
person can act on — never the decoder's internals.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict

from shared.kernel.fields import IDENTIFIER


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
    """The token is missing, malformed, expired, forged, for someone else, or names an unknown
    role; the message says which in plain words."""


HMAC_ALGORITHM = "HS256"
ASYMMETRIC_ALGORITHMS = ("EdDSA", "RS256")
_SUBJECT = re.compile(IDENTIFIER)
_REVERIFY_AFTER_S = 60.0
"""A verified token is trusted from the cache for at most this long, so a key removed from
the JWKS stops working within a minute even for tokens seen before."""


@dataclass(frozen=True)
class TokenRules:
    issuer: str
    audience: str
    leeway: timedelta


class KeySet:
    """Public keys by `kid` from a JWKS file or URL."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._is_url = location.startswith(("https://", "http://"))
        self._client = jwt.PyJWKClient(location, cache_keys=True) if self._is_url else None
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._keys: dict[str, jwt.PyJWK] = {}

    @property
    def may_block(self) -> bool:
        """A URL is fetched over the network: call `key_for` off the event loop."""
        return self._is_url

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        if not kid:
            raise InvalidToken("the token names no key id (kid)")
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid)
            except jwt.PyJWKClientConnectionError:
                raise InvalidToken("the key set cannot be fetched; try again shortly") from None
            except jwt.PyJWKClientError:
                raise InvalidToken(f"the token's key {kid!r} is not one we trust") from None
        self._reload_if_changed()
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidToken(f"the token's key {kid!r} is not one we trust") from None

    def _reload_if_changed(self) -> None:
        with self._lock:
            try:
                mtime = os.stat(self.location).st_mtime
                if mtime == self._mtime:
                    return
                document = json.loads(Path(self.location).read_text())
                listed = document.get("keys") or []
                keys = jwt.PyJWKSet(listed).keys if listed else []
            except (OSError, ValueError, AttributeError, jwt.PyJWTError):
                raise InvalidToken("the key set cannot be read; try again shortly") from None
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._mtime = mtime


class TokenVerifier:
    """Verifies bearer tokens and remembers the ones it verified (a caller sends the same
    token with every request) until they expire or `_REVERIFY_AFTER_S` has passed."""

    def __init__(
        self, rules: TokenRules, *, secret: str | None = None, keys: KeySet | None = None
    ) -> None:
        if (secret is None) == (keys is None):
            raise ValueError("a verifier checks either a shared secret or a key set")
        self.rules, self._secret, self._keys = rules, secret, keys
        self._verified: OrderedDict[str, tuple[Caller, float, float]] = OrderedDict()

    @property
    def may_block(self) -> bool:
        return self._keys is not None and self._keys.may_block

    def cached(self, token: str, now: float | None = None) -> Caller | None:
        """The caller of a token verified recently and not expired, else None."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        caller, expires_at, verified_at = entry
        at = time.time() if now is None else now
        if at >= expires_at or at - verified_at > _REVERIFY_AFTER_S:
            del self._verified[token]
            return None
        return caller

    def verify(self, token: str, now: float | None = None) -> Caller:
        at = time.time() if now is None else now
        caller = self.cached(token, at)
        if caller is not None:
            return caller
        caller, expires_at = self._decode(token, at)
        self._verified[token] = (caller, expires_at, at)
        if len(self._verified) > 4096:
            self._verified.popitem(last=False)
        return caller

    def _decode(self, token: str, now: float) -> tuple[Caller, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a well-formed JWT") from None
        if self._secret is not None:
            key: Any = self._secret
            algorithms = [HMAC_ALGORITHM]
        else:
            assert self._keys is not None
            key = self._keys.key_for(header.get("kid"))
            algorithms = list(ASYMMETRIC_ALGORITHMS)
        if header.get("alg") not in algorithms:
            raise InvalidToken(f"tokens must be signed with {' or '.join(algorithms)}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.rules.audience,
                issuer=self.rules.issuer,
                options={
                    "require": ["sub", "exp", "iss", "aud"],
                    # times are checked below against `now`, which a test can set
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(_in_words(error)) from None
        expires_at = self._check_times(claims, now)
        return _caller_of(claims), expires_at

    def _check_times(self, claims: dict[str, Any], now: float) -> float:
        leeway = self.rules.leeway.total_seconds()
        expires_at, not_before = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(expires_at, int | float) or not isinstance(not_before, int | float):
            raise InvalidToken("the token's exp and nbf must be times (seconds since 1970)")
        if now > expires_at + leeway:
            raise InvalidToken("the token has expired")
        if now + leeway < not_before:
            raise InvalidToken("the token is not valid yet (nbf is in the future)")
        return float(expires_at)


def _caller_of(claims: dict[str, Any]) -> Caller:
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str) or len(sub) > 64 or not _SUBJECT.match(sub):
        raise InvalidToken("the token's subject (sub) is not a valid id")
    if role not in tuple(Role):
        raise InvalidToken("the token's role must be buyer, seller or operator")
    return Caller(sub=sub, role=Role(role))


def _in_words(error: jwt.PyJWTError) -> str:
    match error:
        case jwt.InvalidAudienceError():
            return "the token was issued for another audience (aud)"
        case jwt.InvalidIssuerError():
            return "the token was issued by someone we do not trust (iss)"
        case jwt.MissingRequiredClaimError():
            return f"the token lacks the {error.claim!r} claim"
        case jwt.InvalidSignatureError():
            return "the token's signature does not verify"
        case _:
            return "the bearer token is not a valid JWT"


def mint_with_private_key(
    private_key_pem: bytes,
    kid: str,
    sub: str,
    role: Role,
    now: datetime,
    ttl: timedelta,
    rules: TokenRules,
) -> str:
    """A token signed with a PEM private key: EdDSA for an Ed25519 key, RS256 for an RSA one."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if not kid:
        raise ValueError("a token signed with a private key needs the key's id (kid)")
    key = load_pem_private_key(private_key_pem, password=None)
    algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "RS256"
    return mint_token(key, sub, role, now, ttl, rules=rules, algorithm=algorithm, kid=kid)


def mint_token(
    key: Any,
    sub: str,
    role: Role,
    now: datetime,
    ttl: timedelta,
    *,
    rules: TokenRules,
    algorithm: str = HMAC_ALGORITHM,
    kid: str | None = None,
) -> str:
    """A token as an identity provider would issue it (`yellowcart token`, tests, the demo)."""
    claims = {
        "sub": sub,
        "role": role.value,
        "iss": rules.issuer,
        "aud": rules.audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)
