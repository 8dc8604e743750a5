"""Policy as data: the rules platforms vary, versioned.

Every decision event records `Policy.version`, which names the market and fingerprints the
content, so two different rule sets can never share a version. Defaults follow the marketplace
the project was built for (an Indonesian short-video shop: 24 h for retail-outlet codes and
bank transfers, 1 h for cards, 30 min for e-wallets, no deadline for cash on delivery); a demo
shrinks the windows to seconds. Operators set it through `YELLOWCART_POLICY__…` variables
(`policy_from_environment`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contracts.events import PaymentMethod, SellerCancelReason, Standing
from shared.kernel.events.canonical import canonical_json


class _Rules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _default_windows() -> dict[PaymentMethod, timedelta]:
    return {
        PaymentMethod.INDOMARET: timedelta(hours=24),
        PaymentMethod.ALFAMART: timedelta(hours=24),
        PaymentMethod.BANK_TRANSFER: timedelta(hours=24),
        PaymentMethod.CREDIT_CARD: timedelta(hours=1),
        PaymentMethod.OVO: timedelta(minutes=30),
        PaymentMethod.GOPAY: timedelta(minutes=30),
        PaymentMethod.DANA: timedelta(minutes=30),
    }


class PaymentRules(_Rules):
    windows: dict[PaymentMethod, timedelta] = Field(
        default_factory=_default_windows,
        description="per method; methods left out keep their default window",
    )

    @field_validator("windows")
    @classmethod
    def _keep_unnamed_defaults(
        cls, windows: dict[PaymentMethod, timedelta]
    ) -> dict[PaymentMethod, timedelta]:
        return {**_default_windows(), **windows}

    def window_for(self, method: PaymentMethod) -> timedelta | None:
        """The payment window of a method; None for cash on delivery (no deadline)."""
        if method is PaymentMethod.COD:
            return None
        return self.windows.get(method, timedelta(hours=24))

    def deadline_for(self, method: PaymentMethod, placed_at: datetime) -> datetime | None:
        """When an unpaid order placed at `placed_at` is cancelled; None for cash on delivery.

        The one rule both the order service (its 201 answer) and the payment service (the
        deadline it stores and fires) apply to the same placing instant."""
        window = self.window_for(method)
        return None if window is None else placed_at + window


class DisputeRules(_Rules):
    seller_response_window: timedelta = timedelta(hours=24)
    on_no_response: Literal["lapse", "auto_approve"] = "lapse"
    auto_approve_within_after_payment: timedelta | None = Field(
        None, description="a buyer request this soon after payment is approved at once"
    )
    review_mode: Literal["manual", "auto"] = "manual"


class StandingBand(_Rules):
    standing: Standing
    min_points: int
    min_rate: float


def _default_points() -> dict[SellerCancelReason, int]:
    return {SellerCancelReason.OUT_OF_STOCK: 3, SellerCancelReason.CANNOT_SHIP: 2}


def _default_bands() -> tuple[StandingBand, ...]:
    return (
        StandingBand(standing=Standing.SUSPENDED, min_points=12, min_rate=0.10),
        StandingBand(standing=Standing.RESTRICTED, min_points=8, min_rate=0.05),
        StandingBand(standing=Standing.WARNING, min_points=4, min_rate=0.025),
    )


class PenaltyRules(_Rules):
    points: dict[SellerCancelReason, int] = Field(default_factory=_default_points)

    @field_validator("points")
    @classmethod
    def _keep_unnamed_points(
        cls, points: dict[SellerCancelReason, int]
    ) -> dict[SellerCancelReason, int]:
        return {**_default_points(), **points}

    points_expiry: timedelta = timedelta(days=90)
    rate_window: timedelta = timedelta(days=7)
    rate_min_orders: int = Field(
        10, description="below this many orders in the window the rate puts no one in a band"
    )
    bands: tuple[StandingBand, ...] = Field(
        default_factory=_default_bands, description="worst first; the first band reached wins"
    )

    def standing_for(self, active_points: int, rate: float, orders_in_window: int) -> Standing:
        rate_counts = orders_in_window >= self.rate_min_orders
        for band in self.bands:
            if active_points >= band.min_points or (rate_counts and rate >= band.min_rate):
                return band.standing
        return Standing.GOOD


class Policy(_Rules):
    market: str = "id"
    payment: PaymentRules = Field(default_factory=PaymentRules)
    dispute: DisputeRules = Field(default_factory=DisputeRules)
    penalty: PenaltyRules = Field(default_factory=PenaltyRules)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def version(self) -> str:
        content = self.model_dump(mode="json", exclude={"version"})
        return f"{self.market}-{hashlib.sha256(canonical_json(content)).hexdigest()[:10]}"


class _PolicyFromEnvironment(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="YELLOWCART_", env_nested_delimiter="__", extra="ignore"
    )

    policy: Policy = Field(default_factory=Policy)


def policy_from_environment() -> Policy:
    """The policy `YELLOWCART_POLICY__…` variables describe (defaults for what they leave out)."""
    return _PolicyFromEnvironment().policy
