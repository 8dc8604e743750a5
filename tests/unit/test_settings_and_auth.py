"""Settings refuse development secrets outside the embedded default; tokens say who calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from operations.cli import app
from shared.contracts.policy import Policy, policy_from_environment
from shared.kernel.auth import InvalidToken, Role, mint_token, verify_token
from shared.kernel.settings import DEV_TOKEN_SECRET, Settings

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SECRET = "s" * 32


def test_production_refuses_the_development_token_secret() -> None:
    with pytest.raises(ValidationError, match="YELLOWCART_TOKEN_SECRET must be set"):
        Settings(environment="production", gateway_secret="g" * 32)


def test_production_refuses_the_development_gateway_secret() -> None:
    with pytest.raises(ValidationError, match="YELLOWCART_GATEWAY_SECRET must be set"):
        Settings(environment="production", token_secret="t" * 32)


def test_production_with_own_secrets_is_accepted() -> None:
    settings = Settings(environment="production", token_secret="t" * 32, gateway_secret="g" * 32)
    assert settings.token_secret != DEV_TOKEN_SECRET


def test_settings_come_from_prefixed_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YELLOWCART_BROKER_URL", "kafka:9092")
    monkeypatch.setenv("YELLOWCART_POLICY__DISPUTE__REVIEW_MODE", "auto")
    monkeypatch.setenv("YELLOWCART_POLICY__PAYMENT__WINDOWS__OVO", "PT5S")
    settings, policy = Settings(), policy_from_environment()
    assert settings.broker_url == "kafka:9092"
    assert policy.dispute.review_mode == "auto"
    assert policy.payment.windows["ovo"] == timedelta(seconds=5)
    assert policy.payment.windows["bank_transfer"] == timedelta(hours=24)


def test_each_service_gets_its_own_sqlite_file_by_default() -> None:
    settings = Settings(data_dir="/data")
    assert settings.store_url_for("seller-dispute") == "sqlite:////data/seller_dispute.db"
    assert settings.store_url_for("order") != settings.store_url_for("payment")


def test_a_changed_policy_has_a_different_version() -> None:
    assert Policy().version != Policy.model_validate({"dispute": {"review_mode": "auto"}}).version
    assert Policy().version == Policy().version


def test_a_minted_token_names_its_caller() -> None:
    token = mint_token(SECRET, "b-1", Role.BUYER, NOW, timedelta(hours=1))
    with pytest.raises(InvalidToken):  # expired: NOW is in the past for the real clock
        verify_token(SECRET, token)
    fresh = mint_token(SECRET, "b-1", Role.BUYER, datetime.now(UTC), timedelta(hours=1))
    caller = verify_token(SECRET, fresh)
    assert (caller.sub, caller.role) == ("b-1", Role.BUYER)


@pytest.mark.parametrize(
    "claims",
    [{"sub": "x", "role": "admin"}, {"role": "buyer"}, {"sub": "x"}],
    ids=["unknown-role", "no-sub", "no-role"],
)
def test_tokens_with_bad_claims_are_refused(claims: dict[str, str]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token("o" * 32, "b-1", Role.BUYER, datetime.now(UTC), timedelta(hours=1))
    with pytest.raises(InvalidToken):
        verify_token(SECRET, token)


def test_the_token_command_mints_a_token_for_the_configured_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YELLOWCART_TOKEN_SECRET", "c" * 32)
    result = CliRunner().invoke(app, ["token", "--role", "seller", "--sub", "shop-9"])
    assert result.exit_code == 0, result.output
    caller = verify_token("c" * 32, result.output.strip())
    assert (caller.sub, caller.role) == ("shop-9", Role.SELLER)


def test_production_refuses_short_secrets() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(environment="production", token_secret="short", gateway_secret="g" * 32)


@pytest.mark.parametrize(
    ("arguments", "port", "data_dir"),
    [
        ([], 8123, "/tmp/from-env"),
        (["--port", "9001", "--data-dir", "/tmp/from-flag"], 9001, "/tmp/from-flag"),
    ],
    ids=["environment", "flags-win"],
)
def test_up_takes_its_port_and_data_directory_from_the_settings_like_serve(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], port: int, data_dir: str
) -> None:
    import operations.stack

    monkeypatch.setenv("YELLOWCART_HTTP_PORT", "8123")
    monkeypatch.setenv("YELLOWCART_DATA_DIR", "/tmp/from-env")
    started: list[Settings] = []

    def run_stack(settings: Settings, console: object, *, demo_windows: bool) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(operations.stack, "run_stack", run_stack)
    result = CliRunner().invoke(app, ["up", *arguments])
    assert result.exit_code == 0, result.output
    [settings] = started
    assert (settings.http_port, settings.data_dir) == (port, data_dir)


def test_a_token_verified_once_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    issued = datetime.now(UTC)
    token = mint_token(SECRET, "b-7", Role.BUYER, issued, timedelta(hours=1))
    assert verify_token(SECRET, token).sub == "b-7"
    assert verify_token(SECRET, token).sub == "b-7"  # from the cache of verified tokens
    later = (issued + timedelta(hours=1, seconds=1)).timestamp()
    monkeypatch.setattr("shared.kernel.auth.time.time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token)
