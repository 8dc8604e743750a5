"""The console's pure parts: the points history and its chart, which paths are the console's,
and that example identities are refused outside the embedded run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from operations.console import create_console, is_console_path
from operations.console.app import checkpoint_cell, queue_page
from operations.console.charts import Step, points_history, step_chart
from shared.kernel.settings import Settings

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def penalty(applied: datetime, days: int, points: int, expired: bool = False) -> dict[str, object]:
    return {
        "applied_at": applied.isoformat(),
        "expires_at": (applied + timedelta(days=days)).isoformat(),
        "points": points,
        "expired": expired,
    }


def test_points_rise_when_a_penalty_is_applied_and_fall_when_it_expires() -> None:
    penalties = [penalty(T0, 90, 3), penalty(T0 + timedelta(days=10), 5, 2, expired=True)]
    now = T0 + timedelta(days=30)
    assert points_history(penalties, now) == [
        Step(T0, 0),
        Step(T0, 3),
        Step(T0 + timedelta(days=10), 5),
        Step(T0 + timedelta(days=15), 3),
        Step(now, 3),
    ]


def test_a_penalty_after_now_is_not_yet_history_and_none_draws_nothing() -> None:
    assert points_history([penalty(T0, 90, 3)], T0 - timedelta(seconds=1)) == []
    assert points_history([], T0) == []


def test_two_changes_at_one_instant_are_one_step() -> None:
    steps = points_history([penalty(T0, 90, 3), penalty(T0, 90, 2)], T0 + timedelta(days=1))
    assert steps == [Step(T0, 0), Step(T0, 5), Step(T0 + timedelta(days=1), 5)]


def test_the_chart_draws_steps_inside_its_box() -> None:
    steps = [
        Step(T0, 0),
        Step(T0, 4),
        Step(T0 + timedelta(days=1), 2),
        Step(T0 + timedelta(days=2), 2),
    ]
    chart = step_chart(steps, width=108, height=58, pad=4)
    # x: 4..104 over two days; y: 54 (0 points) .. 4 (4 points)
    assert chart.path == "M4.0,54.0 H4.0 V4.0 H54.0 V29.0 H104.0"
    assert chart.max_points == 4
    with pytest.raises(ValueError):
        step_chart([])


def test_only_console_paths_are_the_consoles() -> None:
    assert is_console_path("/console") and is_console_path("/console/queue")
    assert not is_console_path("/consoles") and not is_console_path("/orders/console")


async def never_called_gateway(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("signing in must not call the services")


async def test_example_identities_are_refused_outside_the_embedded_run(tmp_path: Path) -> None:
    production = Settings(
        environment="production",
        token_jwks=str(tmp_path / "jwks.json"),  # never read: no token is verified here
        gateway_secret="g" * 40,
    )
    console = create_console(never_called_gateway, production)
    transport = httpx.ASGITransport(app=console)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        page = await client.get("/console/sign-in")
        assert "Example identities" not in page.text
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        answer = await client.post(
            "/console/sign-in", data={"csrf": csrf, "identity": "operator:operator-1"}
        )
        assert answer.status_code == 401
        assert "only in the embedded run" in answer.text


def filing(number: int, seller: str = "shop-1", reason: str = "out_of_stock") -> dict[str, str]:
    return {
        "filing_id": f"f{number}",
        "seller_id": seller,
        "reason": reason,
        "filed_at": (T0 + timedelta(minutes=number)).isoformat(),
    }


def test_the_queue_pages_oldest_first_through_the_filters() -> None:
    filings = [filing(n) for n in reversed(range(12))] + [filing(99, seller="shop-2")]
    first = queue_page(filings, seller="shop-1", reason="", page=1, size=5)
    assert [f["filing_id"] for f in first.filings] == ["f0", "f1", "f2", "f3", "f4"]
    assert (first.total, first.page, first.pages) == (12, 1, 3)
    last = queue_page(filings, seller=" shop-1 ", reason="", page=9, size=5)
    assert [f["filing_id"] for f in last.filings] == ["f10", "f11"] and last.page == 3
    assert queue_page(filings, seller="", reason="cannot_ship", page=1).total == 0
    assert queue_page([], seller="", reason="", page=0).pages == 1


def test_each_streams_checkpoint_status_reads_as_verified_not_covered_or_broken() -> None:
    sealed_at = "2026-12-05T03:00:00Z"
    assert checkpoint_cell(None, "") == ("", "no checkpoint")
    css, text = checkpoint_cell("extended", sealed_at)
    assert css == "ok" and text.startswith("verified") and "2026-12-05" in text
    assert checkpoint_cell("not sealed", sealed_at)[1].startswith("not covered yet")
    broken = "order order-o1 v3: history up to version 3 was rewritten"
    css, text = checkpoint_cell(broken, sealed_at)
    assert css == "bad" and text == f"broken: {broken}"
