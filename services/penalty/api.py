"""The penalty service's HTTP edge: a seller's performance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.penalty import handlers
from services.penalty.handlers import PenaltyContext
from shared.kernel.auth import Role
from shared.kernel.http import PROBLEM_RESPONSES, CallerDep, PathId, require_role
from shared.kernel.runtime import context_of

Context = Annotated[PenaltyContext, Depends(context_of(PenaltyContext))]
router = APIRouter(tags=["sellers"], responses=PROBLEM_RESPONSES)


class PenaltyView(BaseModel):
    penalty_id: str
    order_id: str
    reason: str
    points: int
    applied_at: datetime
    expires_at: datetime
    expired: bool


class Performance(BaseModel):
    seller_id: str
    standing: str
    active_points: int
    cancellation_rate: float
    orders_in_window: int
    seller_fault_cancellations_in_window: int
    rate_window_days: float
    penalties: list[PenaltyView]
    policy_version: str


@router.get(
    "/sellers/{seller_id}/performance",
    summary="points, standing, seller-fault cancellation rate, penalties (that seller, operator)",
)
async def get_performance(seller_id: PathId, caller: CallerDep, ctx: Context) -> Performance:
    require_role(caller, Role.SELLER, Role.OPERATOR)
    result = await handlers.performance(ctx, caller, seller_id)
    return Performance(
        seller_id=seller_id,
        standing=result.standing.value,
        active_points=result.active_points,
        cancellation_rate=result.cancellation_rate,
        orders_in_window=result.orders_in_window,
        seller_fault_cancellations_in_window=result.seller_fault_cancellations_in_window,
        rate_window_days=ctx.policy.penalty.rate_window.total_seconds() / 86400,
        penalties=[PenaltyView(**vars(penalty)) for penalty in result.penalties],
        policy_version=ctx.policy.version,
    )
