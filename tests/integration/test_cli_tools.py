"""The auditor's commands on real SQLite stores: audit, verify, replay (with and without swap)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from operations.cli import app
from services.order.projection import COLLECTION
from shared.kernel.storage import open_document_store
from tests.integration.harness import running_bus

runner = CliRunner()


async def a_paid_order(data_dir: Path) -> str:
    async with running_bus(data_dir) as bus:
        order_id = await bus.place_order()
        await bus.pump()
        await bus.pay(order_id)
        await bus.pump()
        return order_id


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("YELLOWCART_STORE_URL", "YELLOWCART_STORE_URLS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_audit_shows_the_cross_service_timeline_with_intact_chains(data_dir: Path) -> None:
    order_id = asyncio.run(a_paid_order(data_dir))
    result = runner.invoke(app, ["audit", order_id, "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chain_ok"] and report["view"]["status"] == "to_ship"
    assert report["timeline"][0]["event_type"] == "OrderPlaced"
    assert {e["event_type"] for e in report["timeline"]} >= {
        "PaymentRequested",
        "PaymentReceived",
        "OrderPaymentConfirmed",
    }


def test_verify_passes_and_then_catches_an_edited_event(data_dir: Path) -> None:
    asyncio.run(a_paid_order(data_dir))
    assert runner.invoke(app, ["verify", "--data-dir", str(data_dir)]).exit_code == 0
    with sqlite3.connect(data_dir / "payment.db") as db:
        db.execute("UPDATE commits SET events = replace(events, '\"amount\":', '\"amount\":9')")
    result = runner.invoke(app, ["verify", "--data-dir", str(data_dir)])
    assert result.exit_code == 3, result.output


def test_replay_finds_a_drifted_view_and_swap_repairs_it(data_dir: Path) -> None:
    order_id = asyncio.run(a_paid_order(data_dir))
    assert runner.invoke(app, ["replay", "--data-dir", str(data_dir)]).exit_code == 0

    async def drift() -> None:
        documents = await open_document_store(f"sqlite:///{data_dir / 'order.db'}")
        view = await documents.get(COLLECTION, order_id)
        assert view is not None
        await documents.put(COLLECTION, order_id, {**view, "status": "shipped"})
        await documents.close()

    asyncio.run(drift())
    drifted = runner.invoke(app, ["replay", "--data-dir", str(data_dir)])
    assert drifted.exit_code == 4 and order_id in drifted.output
    assert runner.invoke(app, ["replay", "--swap", "--data-dir", str(data_dir)]).exit_code == 0
    assert runner.invoke(app, ["replay", "--data-dir", str(data_dir)]).exit_code == 0
