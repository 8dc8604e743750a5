"""Secrets from files (`YELLOWCART_<NAME>_FILE`) and the Kafka login every client is built with."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faststream.security import SASLScram512

from shared.kernel.messaging.kafka import (
    broker_security,
    client_security,
    make_kafka_broker,
    make_producer,
)
from shared.kernel.settings import Settings


def test_a_setting_is_read_from_the_file_its_FILE_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "kafka_password"
    secret.write_text("s3cret-from-a-mounted-file\n")
    monkeypatch.setenv("YELLOWCART_KAFKA_SASL_PASSWORD_FILE", str(secret))

    assert Settings().kafka_sasl_password == "s3cret-from-a-mounted-file"


def test_the_four_store_urls_are_read_as_json_from_their_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How an ops container gets every service's store without a password in its environment."""
    secret = tmp_path / "store_urls"
    secret.write_text(
        '{"order": "mongodb://o@mongo/yellowcart_order", "penalty": "sqlite:///p.db"}\n'
    )
    monkeypatch.setenv("YELLOWCART_STORE_URLS_FILE", str(secret))

    assert Settings().store_urls == {
        "order": "mongodb://o@mongo/yellowcart_order",
        "penalty": "sqlite:///p.db",
    }


def test_the_environment_value_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "store_url"
    secret.write_text("mongodb://from-file")
    monkeypatch.setenv("YELLOWCART_STORE_URL_FILE", str(secret))
    monkeypatch.setenv("YELLOWCART_STORE_URL", "mongodb://from-env")

    assert Settings().store_url == "mongodb://from-env"


def test_file_values_are_validated_like_environment_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = tmp_path / "port"
    port.write_text("9001\n")
    monkeypatch.setenv("YELLOWCART_HTTP_PORT_FILE", str(port))
    assert Settings().http_port == 9001

    port.write_text("not-a-port")
    with pytest.raises(ValueError, match="http_port"):
        Settings()


def test_a_missing_secret_file_is_an_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YELLOWCART_TOKEN_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="YELLOWCART_TOKEN_SECRET_FILE"):
        Settings()


def test_plaintext_is_the_local_default_and_needs_no_principal() -> None:
    settings = Settings()
    assert client_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_security(settings) is None


def test_sasl_without_a_principal_is_refused_before_any_connection() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ValueError, match="YELLOWCART_KAFKA_SASL_USERNAME"):
        client_security(settings)


def test_the_producer_and_the_faststream_broker_log_in_as_the_services_principal() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="payment",
        kafka_sasl_password="payment-password",
    )

    async def built_producer_login() -> tuple[str, str, str]:
        producer = make_producer(settings)
        client = producer.client
        login = client._security_protocol, client._sasl_mechanism, client._sasl_plain_username
        await producer.stop()
        return login

    assert asyncio.run(built_producer_login()) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "payment")

    security = broker_security(settings)
    assert isinstance(security, SASLScram512)
    assert not security.use_ssl
    # the consumers FastStream builds take the broker's connection settings
    assert "sasl_plain_username='payment'" in repr(make_kafka_broker(settings).config)


def test_sasl_ssl_builds_a_verifying_tls_context() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="order",
        kafka_sasl_password="order-password",
    )
    config = client_security(settings)
    assert config["security_protocol"] == "SASL_SSL"
    assert config["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    security = broker_security(settings)
    assert security is not None and security.use_ssl
