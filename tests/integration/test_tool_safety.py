"""The cross-service tools are safe by construction, on real SQLite stores written by the
real services: they refuse one service's store for all four (the compose container's
environment) before writing anything, refuse a store that holds another service's streams,
and `replay --swap` verifies before it swaps and keeps the view it replaced."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from operations.audit import BACKUP_COLLECTION, REPLAY_COLLECTION
from operations.catalog import SERVICES
from operations.cli import EXIT_REFUSED, EXIT_VIEW_DIFFERS, app
from services.order.projection import COLLECTION
from shared.kernel.storage import open_document_store
from tests.integration.harness import running_bus, store_url

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
    directory = tmp_path / "var"
    directory.mkdir()
    return directory


def fingerprint(directory: Path) -> dict[str, str]:
    """Every file of the data directory and its content hash: 'nothing written' means equal."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


async def collection(data_dir: Path, name: str) -> list[dict[str, object]]:
    documents = await open_document_store(store_url(data_dir, "order"))
    try:
        return await documents.find(name)
    finally:
        await documents.close()


@pytest.mark.parametrize(
    "command",
    [["replay", "--swap"], ["replay"], ["verify"], ["audit", "ORDER"], ["republish", "order"]],
    ids=lambda command: " ".join(command),
)
def test_a_single_store_url_is_refused_with_what_to_set_and_nothing_is_written(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """The reported data loss: a tool run in a service container, where only
    YELLOWCART_STORE_URL (that service's store) is set."""
    order_id = asyncio.run(a_paid_order(data_dir))
    monkeypatch.setenv("YELLOWCART_STORE_URL", store_url(data_dir, "order"))
    before = fingerprint(data_dir)
    views_before = asyncio.run(collection(data_dir, COLLECTION))

    result = runner.invoke(app, [part.replace("ORDER", order_id) for part in command])

    assert result.exit_code == EXIT_REFUSED, result.output
    message = " ".join(result.output.split())
    assert "set YELLOWCART_STORE_URLS" in message
    assert "YELLOWCART_STORE_URL (" in message  # says why the one URL it saw is not used
    assert fingerprint(data_dir) == before
    assert asyncio.run(collection(data_dir, COLLECTION)) == views_before
    assert asyncio.run(collection(data_dir, REPLAY_COLLECTION)) == []


def test_the_same_store_named_for_every_service_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(a_paid_order(data_dir))
    same = store_url(data_dir, "order")
    spelled_differently = f"sqlite:///{data_dir}/../{data_dir.name}/order.db"
    urls = {name: same for name in SERVICES} | {"payment": spelled_differently}
    monkeypatch.setenv("YELLOWCART_STORE_URLS", json.dumps(urls))
    before = fingerprint(data_dir)

    result = runner.invoke(app, ["replay", "--swap"])

    assert result.exit_code == EXIT_REFUSED
    assert "must be distinct" in result.output and "order and payment" in result.output
    assert fingerprint(data_dir) == before


def test_a_store_holding_another_services_streams_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asyncio.run(a_paid_order(data_dir))
    swapped_files = tmp_path / "copy"
    shutil.copytree(data_dir, swapped_files)
    urls = {name: store_url(swapped_files, name) for name in SERVICES}
    urls["order"], urls["payment"] = urls["payment"], urls["order"]
    monkeypatch.setenv("YELLOWCART_STORE_URLS", json.dumps(urls))
    before = fingerprint(swapped_files)

    result = runner.invoke(app, ["replay", "--swap"])

    assert result.exit_code == EXIT_REFUSED
    assert "the store named for order holds stream payment-" in " ".join(result.output.split())
    assert fingerprint(swapped_files) == before


def test_a_missing_store_file_is_refused_rather_than_created(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    urls = {name: store_url(tmp_path / "nowhere", name) for name in SERVICES}
    monkeypatch.setenv("YELLOWCART_STORE_URLS", json.dumps(urls))
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == EXIT_REFUSED and "does not exist" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_store_urls_for_all_four_services_are_accepted(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = asyncio.run(a_paid_order(data_dir))
    urls = {name: store_url(data_dir, name) for name in SERVICES}
    monkeypatch.setenv("YELLOWCART_STORE_URLS", json.dumps(urls))
    result = runner.invoke(app, ["audit", order_id, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["view"]["payment"]["status"] == "paid"


def test_replay_dry_run_writes_nothing_even_with_swap(data_dir: Path) -> None:
    asyncio.run(a_paid_order(data_dir))
    before = asyncio.run(collection(data_dir, COLLECTION))

    result = runner.invoke(app, ["replay", "--swap", "--dry-run", "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert asyncio.run(collection(data_dir, REPLAY_COLLECTION)) == []
    assert asyncio.run(collection(data_dir, BACKUP_COLLECTION)) == []
    assert asyncio.run(collection(data_dir, COLLECTION)) == before


def test_swap_keeps_the_replaced_view_and_repairs_a_drifted_one(data_dir: Path) -> None:
    order_id = asyncio.run(a_paid_order(data_dir))

    async def drift() -> dict[str, object]:
        documents = await open_document_store(store_url(data_dir, "order"))
        view = await documents.get(COLLECTION, order_id)
        assert view is not None
        drifted = {**view, "status": "shipped"}
        await documents.put(COLLECTION, order_id, drifted)
        await documents.close()
        return drifted

    drifted = asyncio.run(drift())
    result = runner.invoke(app, ["replay", "--swap", "--json", "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["swapped"] and report["differing"] == [order_id] and not report["problems"]
    (live,) = asyncio.run(collection(data_dir, COLLECTION))
    assert live["status"] == "to_ship"
    assert asyncio.run(collection(data_dir, BACKUP_COLLECTION)) == [drifted]


def test_swap_is_refused_when_the_rebuild_would_lose_events_the_live_view_has(
    data_dir: Path,
) -> None:
    """A view that applied more than the stores hold (e.g. the stores given are older than the
    view): swapping would cut events out of what auditors read, so it is refused."""
    order_id = asyncio.run(a_paid_order(data_dir))

    async def ahead() -> None:
        documents = await open_document_store(store_url(data_dir, "order"))
        view = await documents.get(COLLECTION, order_id)
        assert view is not None
        applied = {**view["applied"], f"payment-{order_id}": 99}
        await documents.put(COLLECTION, order_id, {**view, "applied": applied})
        await documents.close()

    asyncio.run(ahead())
    before = asyncio.run(collection(data_dir, COLLECTION))

    result = runner.invoke(app, ["replay", "--swap", "--data-dir", str(data_dir)])

    assert result.exit_code == EXIT_VIEW_DIFFERS
    assert "lacks events the live view has" in result.output and "not swapped" in result.output
    assert asyncio.run(collection(data_dir, COLLECTION)) == before
    assert asyncio.run(collection(data_dir, BACKUP_COLLECTION)) == []


def test_republish_dry_run_counts_and_sends_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker listens at the URL given: a dry run must not need one."""
    asyncio.run(a_paid_order(data_dir))
    monkeypatch.setenv("YELLOWCART_BROKER_URL", "127.0.0.1:1")
    before = fingerprint(data_dir)
    result = runner.invoke(app, ["republish", "payment", "--dry-run", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "would re-emit 2 events of payment" in result.output
    assert fingerprint(data_dir) == before
