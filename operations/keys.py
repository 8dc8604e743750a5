"""Token signing keys for production mode: create, publish in a JWKS, retire, sign.

Most operators have an identity provider that signs tokens and publishes its JWKS; point
`YELLOWCART_TOKEN_JWKS` at that. These commands are for running without one (and for tests):
`yellowcart keys new` makes a key pair, keeps the private key in a file only you can read and
adds the public key to the JWKS beside the keys already there; `yellowcart keys retire`
removes a key once every token it signed has expired. Rotation is new → sign with the new
key → retire the old one; services re-read a JWKS file when it changes.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from shared.kernel.auth import Role, TokenRules, mint_with_private_key

Algorithm = Literal["EdDSA", "RS256"]


def new_key(kid: str, private_key: Path, jwks: Path, algorithm: Algorithm = "EdDSA") -> None:
    """A new key pair: the private key to `private_key` (mode 0600), the public one added to
    `jwks` (created if missing). Refuses to reuse a key id or overwrite a private key."""
    keys = _read(jwks)
    if any(key.get("kid") == kid for key in keys):
        raise ValueError(f"{jwks} already has a key {kid!r}: pick a new key id")
    if private_key.exists():
        raise ValueError(f"{private_key} exists: not overwriting a private key")
    secret: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == "EdDSA":
        secret = ed25519.Ed25519PrivateKey.generate()
        public: dict[str, Any] = OKPAlgorithm.to_jwk(secret.public_key(), as_dict=True)
    else:
        secret = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        public = RSAAlgorithm.to_jwk(secret.public_key(), as_dict=True)
    pem = secret.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    _write(jwks, [*keys, {**public, "kid": kid, "alg": algorithm, "use": "sig"}])


def retire_key(kid: str, jwks: Path) -> None:
    """Remove `kid` from the JWKS: tokens it signed are refused from then on."""
    keys = _read(jwks)
    kept = [key for key in keys if key.get("kid") != kid]
    if len(kept) == len(keys):
        raise ValueError(f"{jwks} has no key {kid!r}")
    _write(jwks, kept)


def signed_token(
    private_key: Path,
    kid: str,
    sub: str,
    role: Role,
    now: datetime,
    ttl: timedelta,
    rules: TokenRules,
) -> str:
    """A token signed with a private key made by `new_key` (EdDSA or RS256, by its type)."""
    return mint_with_private_key(private_key.read_bytes(), kid, sub, role, now, ttl, rules)


def _read(jwks: Path) -> list[dict[str, Any]]:
    if not jwks.exists():
        return []
    keys: list[dict[str, Any]] = json.loads(jwks.read_text()).get("keys", [])
    return keys


def _write(jwks: Path, keys: list[dict[str, Any]]) -> None:
    """Atomically, so a service re-reading the file never sees half of it."""
    partial = jwks.with_name(jwks.name + ".partial")
    partial.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    partial.replace(jwks)
