"""Settings refuse development secrets outside the embedded default; tokens say who calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from operations.cli import app
from shared.contracts.policy import Policy, policy_from_environment
from shared.kernel.settings import DEV_GATEWAY_SECRET, Settings

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SECRET = "s" * 32


def test_production_refuses_hs256_tokens_and_needs_a_jwks() -> None:
    with pytest.raises(ValidationError, match="YELLOWCART_TOKEN_JWKS must be set"):
        Settings(environment="production", token_secret="t" * 32, gateway_secret="g" * 32)


def test_production_refuses_the_development_gateway_secret() -> None:
    with pytest.raises(ValidationError, match="YELLOWCART_GATEWAY_SECRET must be set"):
        Settings(environment="production", token_jwks="/run/secrets/jwks.json")


def test_production_with_a_jwks_and_its_own_gateway_secret_is_accepted() -> None:
    settings = Settings(
        environment="production", token_jwks="/run/secrets/jwks.json", gateway_secret="g" * 32
    )
    assert settings.gateway_secret != DEV_GATEWAY_SECRET


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


def test_production_refuses_short_secrets() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(environment="production", token_jwks="jwks.json", gateway_secret="short")


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
