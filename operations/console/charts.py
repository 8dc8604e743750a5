"""The seller page's chart: active penalty points over time, as a small inline SVG.

Pure functions of the performance API's penalties (each applied at a moment, worth points until
it expires), so the history needs no store of its own and a test can check every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from shared.kernel.clock import utc


@dataclass(frozen=True)
class Step:
    at: datetime
    points: int


def points_history(penalties: list[dict[str, Any]], now: datetime) -> list[Step]:
    """Active points after each change (a penalty applied or expired up to `now`), oldest
    first: zero at the first penalty's instant, then one step per instant, ending at `now`."""
    changes: list[tuple[datetime, int]] = []
    for penalty in penalties:
        applied = utc(datetime.fromisoformat(penalty["applied_at"]))
        expires = utc(datetime.fromisoformat(penalty["expires_at"]))
        if applied <= now:
            changes.append((applied, penalty["points"]))
            if expires <= now or penalty.get("expired"):
                changes.append((min(expires, now), -penalty["points"]))
    if not changes:
        return []
    changes.sort(key=lambda change: change[0])
    steps = [Step(changes[0][0], 0)]
    total = 0
    for at, delta in changes:
        total += delta
        if len(steps) > 1 and steps[-1].at == at:
            steps[-1] = Step(at, total)  # two changes at one instant are one step
        else:
            steps.append(Step(at, total))
    if steps[-1].at < now:
        steps.append(Step(now, total))
    return steps


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    path: str
    max_points: int
    start: datetime
    end: datetime


def step_chart(steps: list[Step], width: int = 320, height: int = 120, pad: int = 8) -> Chart:
    """An SVG path drawing `steps` as a step line scaled into `width` by `height`."""
    if not steps:
        raise ValueError("no history to draw")
    start, end = steps[0].at, steps[-1].at
    span = (end - start).total_seconds() or 1.0
    top = max(max(step.points for step in steps), 1)

    def x(at: datetime) -> float:
        return pad + (width - 2 * pad) * (at - start).total_seconds() / span

    def y(points: int) -> float:
        return height - pad - (height - 2 * pad) * points / top

    parts = [f"M{x(steps[0].at):.1f},{y(steps[0].points):.1f}"]
    for previous, step in pairwise(steps):
        parts.append(f"H{x(step.at):.1f}")
        if step.points != previous.points:
            parts.append(f"V{y(step.points):.1f}")
    return Chart(width, height, " ".join(parts), top, start, end)
