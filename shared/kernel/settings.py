"""Operations settings from the environment (prefix `YELLOWCART_`), read only when asked, never
at import. The policy (the rules platforms vary) is the product's: `shared.contracts.policy`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kernel.auth import KeySet, Role, TokenRules, TokenVerifier, mint_token

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
        description="per-service store URLs for cross-service tools (audit, replay, verify)",
    )
    data_dir: str = Field("var", description="where embedded SQLite files live")
    token_secret: str = Field(
        DEV_TOKEN_SECRET, description="HS256 secret for bearer tokens (embedded mode only)"
    )
    token_jwks: str = Field(
        "",
        description="JWKS file path or URL with the public keys (EdDSA or RS256) that sign "
        "bearer tokens; required in production, where HS256 is refused",
    )
    token_issuer: str = Field("yellowcart", description="the `iss` every token must carry")
    token_audience: str = Field("yellowcart-api", description="the `aud` every token must carry")
    token_leeway_s: int = Field(
        30, ge=0, le=300, description="clock difference allowed on `exp` and `nbf`"
    )
    gateway_secret: str = Field(DEV_GATEWAY_SECRET, description="HMAC secret of gateway callbacks")
    callback_tolerance_s: int = Field(
        300,
        ge=1,
        le=3600,
        description="a gateway callback signed further than this from our clock is refused "
        "(replay protection)",
    )
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
    lease_ttl_s: float = Field(
        3.0,
        gt=0,
        le=60,
        description="TTL of the outbox and timer leases (renewed every third of it): how long "
        "a replica that died or froze keeps the others from taking over",
    )

    @model_validator(mode="after")
    def _no_dev_secrets_outside_embedded(self) -> Settings:
        if self.environment != "embedded":
            if not self.token_jwks:
                raise ValueError(
                    "YELLOWCART_TOKEN_JWKS must be set: outside embedded mode bearer tokens are "
                    "checked against the identity provider's public keys (EdDSA or RS256)"
                )
            for name, dev_value in (("gateway_secret", DEV_GATEWAY_SECRET),):
                if getattr(self, name) == dev_value:
                    raise ValueError(
                        f"YELLOWCART_{name.upper()} must be set: the development secret "
                        "is only allowed when YELLOWCART_ENVIRONMENT=embedded"
                    )
                if len(getattr(self, name)) < 32:
                    raise ValueError(f"YELLOWCART_{name.upper()} must be at least 32 characters")
        return self

    def token_rules(self) -> TokenRules:
        return TokenRules(
            self.token_issuer, self.token_audience, timedelta(seconds=self.token_leeway_s)
        )

    def token_verifier(self) -> TokenVerifier:
        """JWKS-backed when `token_jwks` is set, otherwise the embedded HS256 secret."""
        if self.token_jwks:
            return TokenVerifier(self.token_rules(), keys=KeySet(self.token_jwks))
        return TokenVerifier(self.token_rules(), secret=self.token_secret)

    def dev_token(self, sub: str, role: Role, now: datetime, ttl: timedelta) -> str:
        """A token signed with the embedded secret (the example tokens of `up`, the demo)."""
        return mint_token(self.token_secret, sub, role, now, ttl, rules=self.token_rules())

    def store_url_for(self, service: str) -> str:
        return (
            self.store_urls.get(service)
            or self.store_url
            or f"sqlite:///{self.data_dir}/{service.replace('-', '_')}.db"
        )
