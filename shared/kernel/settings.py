"""Operations settings from the environment (prefix `YELLOWCART_`), read only when asked, never
at import. The policy (the rules platforms vary) is the product's: `shared.contracts.policy`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_TOKEN_SECRET = "yellowcart-dev-token-secret-not-for-production"
DEV_GATEWAY_SECRET = "yellowcart-dev-gateway-secret-not-for-production"


class Settings(BaseSettings):
    """Operations settings shared by every service process and tool."""

    model_config = SettingsConfigDict(
        env_prefix="YELLOWCART_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["embedded", "production"] = Field(
        "embedded",
        description="`embedded` allows the development secrets; `production` refuses them",
    )
    broker_url: str = Field("localhost:9092", description="Kafka bootstrap servers")
    kafka_idempotence: bool = Field(
        False, description="idempotent producer: on for real Kafka, off for the local Tansu broker"
    )
    kafka_request_timeout_ms: int = Field(
        15_000, description="a produce not acknowledged by then fails and is retried by the relay"
    )
    store_url: str = Field(
        "", description="event store URL (sqlite:///var/<service>.db or mongodb://…); per service"
    )
    store_urls: dict[str, str] = Field(
        default_factory=dict,
        description="every service's own store, for the cross-service tools (audit, verify, "
        "checkpoint, replay, republish): a JSON object naming all four, each a distinct store; "
        "the tools never fall back to YELLOWCART_STORE_URL",
    )
    data_dir: str = Field("var", description="where embedded SQLite files live")
    token_secret: str = Field(DEV_TOKEN_SECRET, description="HS256 secret for bearer tokens")
    gateway_secret: str = Field(DEV_GATEWAY_SECRET, description="HMAC secret of gateway callbacks")
    instance_id: str = Field(
        "",
        description="stable name of this replica (lease owner); default host:pid. A restarted "
        "process with the same id takes its leases back at once instead of waiting them out",
    )
    http_host: str = Field("127.0.0.1", description="address `serve` listens on")
    http_port: int = Field(8000, description="port `serve` listens on")
    max_body_bytes: int = Field(16_384, description="request bodies above this are refused (413)")
    relay_interval_s: float = Field(0.05, description="outbox relay poll interval")
    consumer_session_timeout_ms: int = Field(
        6000, description="consumer-group session timeout: how fast a dead consumer is replaced"
    )
    consumer_fetch_wait_ms: int = Field(
        100,
        description="how long the broker may hold a consumer's fetch when nothing is new: "
        "the latency an idle consumer adds to the next event",
    )
    timer_interval_s: float = Field(0.2, description="timer scheduler poll interval")

    @model_validator(mode="after")
    def _no_dev_secrets_outside_embedded(self) -> Settings:
        if self.environment != "embedded":
            for name, dev_value in (
                ("token_secret", DEV_TOKEN_SECRET),
                ("gateway_secret", DEV_GATEWAY_SECRET),
            ):
                if getattr(self, name) == dev_value:
                    raise ValueError(
                        f"YELLOWCART_{name.upper()} must be set: the development secret "
                        "is only allowed when YELLOWCART_ENVIRONMENT=embedded"
                    )
                if len(getattr(self, name)) < 32:
                    raise ValueError(f"YELLOWCART_{name.upper()} must be at least 32 characters")
        return self

    def store_url_for(self, service: str) -> str:
        return (
            self.store_urls.get(service)
            or self.store_url
            or f"sqlite:///{self.data_dir}/{service.replace('-', '_')}.db"
        )
