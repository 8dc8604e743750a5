"""Operations settings from the environment (prefix `YELLOWCART_`), read only when asked, never
at import. The policy (the rules platforms vary) is the product's: `shared.contracts.policy`.

Any setting can also come from a file: `YELLOWCART_<NAME>_FILE=/run/secrets/x` reads the value
from that file (one trailing newline dropped). Containers use this for every secret (Docker
secrets, Kubernetes Secret volumes), so no password is ever in an environment listing. A value
set directly in the environment wins over the file.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.kernel.auth import (
    KeySet,
    Role,
    TokenRules,
    TokenVerifier,
    mint_token,
    mint_with_private_key,
)

ENV_PREFIX = "YELLOWCART_"

DEV_TOKEN_SECRET = "yellowcart-dev-token-secret-not-for-production"
DEV_GATEWAY_SECRET = "yellowcart-dev-gateway-secret-not-for-production"


class Settings(BaseSettings):
    """Operations settings shared by every service process and tool."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["embedded", "production"] = Field(
        "embedded",
        description="`embedded` allows the development secrets; `production` refuses them",
    )
    broker_url: str = Field("localhost:9092", description="Kafka bootstrap servers")
    kafka_idempotence: bool = Field(
        False, description="idempotent producer: on for real Kafka, off for the local Tansu broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="how clients talk to Kafka: SASL_SSL (or SASL_PLAINTEXT inside a private "
        "network) in production, PLAINTEXT for the local broker",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*"
    )
    kafka_sasl_username: str = Field("", description="this service's Kafka principal")
    kafka_sasl_password: str = Field(
        "", description="its password; give it as a file: YELLOWCART_KAFKA_SASL_PASSWORD_FILE"
    )
    kafka_ssl_cafile: str = Field(
        "", description="CA bundle that signed the brokers' certificates (SASL_SSL)"
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
    token_secret: str = Field(
        DEV_TOKEN_SECRET, description="HS256 secret for bearer tokens (embedded mode only)"
    )
    token_jwks: str = Field(
        "",
        description="JWKS file path or URL with the public keys (EdDSA or RS256) that sign "
        "bearer tokens; required in production, where HS256 is refused",
    )
    token_signing_key: str = Field(
        "",
        description="PEM private key (EdDSA or RS256) that `yellowcart token` and the demo sign "
        "with in production; the services never need it",
    )
    token_signing_kid: str = Field("", description="the key id (`kid`) of `token_signing_key`")
    token_issuer: str = Field("yellowcart", description="the `iss` every token must carry")
    token_audience: str = Field("yellowcart-api", description="the `aud` every token must carry")
    token_leeway_s: int = Field(
        30, ge=0, le=300, description="clock difference allowed on `exp` and `nbf`"
    )
    gateway_secret: str = Field(DEV_GATEWAY_SECRET, description="HMAC secret of gateway callbacks")
    console_secret: str = Field(
        "",
        description="signs the console's session cookies; empty: derived from the token secret "
        "in embedded mode, else a random key per gateway process (gateway replicas need one "
        "shared value)",
    )
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
    relay_interval_s: float = Field(
        0.05,
        description="outbox relay poll interval: how soon a commit stored by another process "
        "(or replica) is published; this process's own commits wake the relay at once",
    )
    relay_linger_s: float = Field(
        0.005,
        ge=0,
        le=1,
        description="after a commit wakes the relay, how long it waits for more before sending "
        "them as one batch: latency traded for fewer relay runs under load",
    )
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
    timer_overdue_after_s: float = Field(
        60.0, description="a timer due longer ago than this counts as overdue in /metrics"
    )
    outbox_stall_after_s: float = Field(
        30.0,
        description="/health/ready fails while the oldest unpublished commit is older than this",
    )
    otlp_endpoint: str = Field(
        "",
        description="OpenTelemetry collector (OTLP over HTTP, e.g. http://otel-collector:4318): "
        "traces are exported there; empty = no tracing",
    )
    log_level: str = Field("INFO", description="log level: DEBUG, INFO, WARNING, ERROR")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="`json`: one JSON object per line; `console`: for people; `auto`: console "
        "on a terminal, JSON otherwise",
    )
    checkpoint_interval_s: float = Field(
        0.0,
        ge=0,
        description="how often each service's lease-holding replica signs the heads of its "
        "store and publishes them to checkpoint.events (a round with nothing new publishes "
        "nothing); 0 = never. `yellowcart up` seals every 60 s",
    )
    checkpoint_key: str = Field(
        "",
        description="the Ed25519 private key (PEM text) checkpoints are signed with; give it "
        "as a file: YELLOWCART_CHECKPOINT_KEY_FILE. Required when the interval is not 0",
    )
    checkpoint_public_key: str = Field(
        "",
        description="path of the Ed25519 public key (PEM) sealed checkpoints must be signed with "
        "(the console; `verify --public-key` reads it too); empty: the key `yellowcart up` made "
        "in the data directory, else only the key inside each checkpoint",
    )
    health_timeout_s: float = Field(
        2.0, description="how long /health/ready waits for the store and the broker to answer"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            ValueFilesSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _no_dev_secrets_outside_embedded(self) -> Settings:
        if self.checkpoint_interval_s and not self.checkpoint_key:
            raise ValueError(
                "YELLOWCART_CHECKPOINT_KEY_FILE must name the Ed25519 private key (PEM) "
                "checkpoints are signed with, or YELLOWCART_CHECKPOINT_INTERVAL_S be 0"
            )
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

    def issue_token(self, sub: str, role: Role, now: datetime, ttl: timedelta) -> str:
        """A token for the tools that act as a caller (`yellowcart token`, `up`'s example
        tokens, the demo): signed with `token_signing_key` when set, else with the embedded
        secret. Services never need a signing key; only a tool that mints does."""
        rules = self.token_rules()
        if self.token_signing_key:
            pem = Path(self.token_signing_key).read_bytes()
            return mint_with_private_key(pem, self.token_signing_kid, sub, role, now, ttl, rules)
        return mint_token(self.token_secret, sub, role, now, ttl, rules=rules)

    def store_url_for(self, service: str) -> str:
        return (
            self.store_urls.get(service)
            or self.store_url
            or f"sqlite:///{self.data_dir}/{service.replace('-', '_')}.db"
        )


class ValueFilesSource(PydanticBaseSettingsSource):
    """Settings read from the files named by `YELLOWCART_<NAME>_FILE` variables.

    pydantic-settings' own `secrets_dir` wants one directory whose file names are the variable
    names; the `_FILE` convention (the one the mongo and kafka images use) lets each deployment
    mount each secret wherever its platform puts it, and says in the environment where it is.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        if not path:
            return None, field_name, False
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"{variable}={path}: cannot read the file ({error})") from error
        return text.removesuffix("\n").removesuffix("\r"), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                # A mapping or list (YELLOWCART_STORE_URLS) is JSON in its file, as in the
                # environment.
                if self.field_is_complex(field):
                    value = self.decode_complex_value(name, field, value)
                values[key] = value
        return values
