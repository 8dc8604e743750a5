"""Bearer tokens: issuer, audience, expiry and not-before with a leeway; HS256 only in
embedded mode; EdDSA and RS256 against a JWKS with key rotation; refusals in plain words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from operations.cli import app
from operations.keys import new_key, retire_key, signed_token
from shared.kernel.auth import (
    InvalidToken,
    KeySet,
    Role,
    TokenRules,
    TokenVerifier,
    mint_token,
)
from shared.kernel.settings import Settings

SECRET = "s" * 32
RULES = TokenRules("yellowcart", "yellowcart-api", timedelta(seconds=30))
NOW = datetime.now(UTC).replace(microsecond=0)


def hs256(**claims: object) -> str:
    base: dict[str, object] = {
        "sub": "b-1",
        "role": "buyer",
        "iss": RULES.issuer,
        "aud": RULES.audience,
        "exp": NOW + timedelta(hours=1),
    }
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def refusal(verifier: TokenVerifier, token: str, now: datetime = NOW) -> str:
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token, now.timestamp())
    return str(refused.value)


@pytest.fixture
def embedded() -> TokenVerifier:
    return TokenVerifier(RULES, secret=SECRET)


def test_a_minted_token_names_its_caller(embedded: TokenVerifier) -> None:
    token = mint_token(SECRET, "b-1", Role.BUYER, NOW, timedelta(hours=1), rules=RULES)
    caller = embedded.verify(token, NOW.timestamp())
    assert (caller.sub, caller.role) == ("b-1", Role.BUYER)


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"iss": "someone-else"}, "issued by someone we do not trust (iss)"),
        ({"aud": "another-api"}, "issued for another audience (aud)"),
        ({"exp": NOW - timedelta(seconds=31)}, "the token has expired"),
        ({"nbf": NOW + timedelta(seconds=31)}, "not valid yet"),
        ({"role": "admin"}, "role must be buyer, seller or operator"),
        ({"sub": "../x"}, "subject (sub) is not a valid id"),
        ({"sub": "x" * 65}, "subject (sub) is not a valid id"),
    ],
    ids=["issuer", "audience", "expired", "not-before", "role", "sub-chars", "sub-length"],
)
def test_tokens_that_break_a_rule_are_refused_in_plain_words(
    embedded: TokenVerifier, claims: dict[str, object], words: str
) -> None:
    assert words in refusal(embedded, hs256(**claims))


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud"])
def test_tokens_missing_a_required_claim_are_refused(embedded: TokenVerifier, claim: str) -> None:
    claims = jwt.decode(hs256(), options={"verify_signature": False})
    del claims[claim]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert claim in refusal(embedded, token)


def test_clock_differences_within_the_leeway_are_tolerated(embedded: TokenVerifier) -> None:
    just_expired = hs256(exp=NOW - timedelta(seconds=20))
    not_quite_valid = hs256(nbf=NOW + timedelta(seconds=20))
    assert embedded.verify(just_expired, NOW.timestamp()).sub == "b-1"
    assert embedded.verify(not_quite_valid, NOW.timestamp()).sub == "b-1"


@pytest.mark.parametrize(
    "token",
    ["garbage\xb7", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer x", ""],
    ids=["non-ascii", "three-parts", "alg-none", "nested-scheme", "empty"],
)
def test_garbage_tokens_get_one_sentence_without_decoder_internals(
    embedded: TokenVerifier, token: str
) -> None:
    words = refusal(embedded, token)
    for internal in ("codec", "utf-8", "byte", "Traceback", "Error"):
        assert internal not in words, words


def test_a_token_signed_with_another_secret_is_refused(embedded: TokenVerifier) -> None:
    forged = mint_token("o" * 32, "b-1", Role.BUYER, NOW, timedelta(hours=1), rules=RULES)
    assert "signature does not verify" in refusal(embedded, forged)


def test_a_token_verified_once_still_expires(embedded: TokenVerifier) -> None:
    token = mint_token(SECRET, "b-7", Role.BUYER, NOW, timedelta(hours=1), rules=RULES)
    assert embedded.verify(token, NOW.timestamp()).sub == "b-7"
    assert embedded.cached(token, NOW.timestamp() + 1) is not None, "kept after verifying"
    later = NOW + timedelta(hours=1, seconds=31)  # past expiry and the leeway
    assert embedded.cached(token, later.timestamp()) is None
    assert "expired" in refusal(embedded, token, later)


# --- production: asymmetric keys from a JWKS ----------------------------------------------


@pytest.fixture
def jwks(tmp_path: Path) -> Path:
    return tmp_path / "jwks.json"


def test_eddsa_and_rs256_tokens_verify_against_the_jwks_and_keys_rotate(
    tmp_path: Path, jwks: Path
) -> None:
    """The rotation path: publish a second key beside the first, sign with it, retire the
    first; tokens of the retired key are refused once their cache entry is re-checked."""
    new_key("2026-11", tmp_path / "old.pem", jwks, "EdDSA")
    verifier = TokenVerifier(RULES, keys=KeySet(str(jwks)))
    old = signed_token(tmp_path / "old.pem", "2026-11", "s-1", Role.SELLER, NOW, HOUR, RULES)
    assert verifier.verify(old, NOW.timestamp()).sub == "s-1"

    new_key("2026-12", tmp_path / "new.pem", jwks, "RS256")
    new = signed_token(tmp_path / "new.pem", "2026-12", "ops-1", Role.OPERATOR, NOW, HOUR, RULES)
    assert verifier.verify(new, NOW.timestamp()).role is Role.OPERATOR
    assert verifier.verify(old, NOW.timestamp()).sub == "s-1", "both keys trusted meanwhile"

    retire_key("2026-11", jwks)
    a_minute_later = NOW + timedelta(seconds=61)
    assert "'2026-11' is not one we trust" in refusal(verifier, old, a_minute_later)
    assert verifier.verify(new, a_minute_later.timestamp()).sub == "ops-1"


def test_a_jwks_verifier_refuses_hs256_and_unknown_keys(tmp_path: Path, jwks: Path) -> None:
    """No algorithm confusion: a token signed with a shared secret (or the public key used as
    one) is refused where keys are asymmetric; so is a key id the JWKS does not hold."""
    new_key("k1", tmp_path / "k1.pem", jwks)
    verifier = TokenVerifier(RULES, keys=KeySet(str(jwks)))
    assert "signed with EdDSA or RS256" in refusal(verifier, _with_kid(hs256(), "k1"))
    other = tmp_path / "other.pem"
    new_key("k9", other, tmp_path / "elsewhere.json")
    stranger = signed_token(other, "k9", "b-1", Role.BUYER, NOW, HOUR, RULES)
    assert "'k9' is not one we trust" in refusal(verifier, stranger)
    assert "names no key id" in refusal(verifier, hs256())


def test_key_commands_and_the_token_command_work_together(
    tmp_path: Path, jwks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    private = tmp_path / "signing.pem"
    created = runner.invoke(
        app, ["keys", "new", "--kid", "k1", "--private-key", str(private), "--jwks", str(jwks)]
    )
    assert created.exit_code == 0, created.output
    assert private.stat().st_mode & 0o077 == 0, "the private key is readable by its owner only"
    again = runner.invoke(
        app,
        ["keys", "new", "--kid", "k1", "--private-key", str(tmp_path / "x"), "--jwks", str(jwks)],
    )
    assert again.exit_code != 0 and "already has a key" in again.output
    minted = runner.invoke(
        app,
        [
            "token",
            "--role",
            "seller",
            "--sub",
            "shop-9",
            "--private-key",
            str(private),
            "--kid",
            "k1",
        ],
    )
    assert minted.exit_code == 0, minted.output
    monkeypatch.setenv("YELLOWCART_TOKEN_JWKS", str(jwks))
    caller = Settings().token_verifier().verify(minted.output.strip())
    assert (caller.sub, caller.role) == ("shop-9", Role.SELLER)
    retired = runner.invoke(app, ["keys", "retire", "--kid", "k1", "--jwks", str(jwks)])
    assert retired.exit_code == 0, retired.output
    with pytest.raises(InvalidToken):
        Settings().token_verifier().verify(minted.output.strip())


def test_the_token_command_mints_an_embedded_token_for_the_configured_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YELLOWCART_TOKEN_SECRET", "c" * 32)
    result = CliRunner().invoke(app, ["token", "--role", "seller", "--sub", "shop-9"])
    assert result.exit_code == 0, result.output
    caller = TokenVerifier(RULES, secret="c" * 32).verify(result.output.strip())
    assert (caller.sub, caller.role) == ("shop-9", Role.SELLER)


HOUR = timedelta(hours=1)


def _with_kid(token: str, kid: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": kid})
