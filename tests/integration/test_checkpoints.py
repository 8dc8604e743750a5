"""Signed checkpoints catch what the hash chain cannot: history rewritten *and rehashed*.

Real SQLite stores written by the real services; the rewrite is done the way an attacker with
write access would: edit one stored event, then recompute that commit's hash and every later
link of the stream, so the chain is consistent again."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from operations.cli import EXIT_CHECKPOINT, EXIT_REFUSED, app
from shared.kernel.events.canonical import canonical_json
from shared.kernel.eventstore.chain import seal_canonical
from tests.integration.harness import running_bus

runner = CliRunner()


async def paid_orders(data_dir: Path, count: int) -> list[str]:
    async with running_bus(data_dir) as bus:
        order_ids = [await bus.place_order() for _ in range(count)]
        await bus.pump()
        for order_id in order_ids:
            await bus.pay(order_id)
        await bus.pump()
        return order_ids


@pytest.fixture
def sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path, list[str]]:
    """Two paid orders, a key pair and a checkpoint of the four stores."""
    for name in ("YELLOWCART_STORE_URL", "YELLOWCART_STORE_URLS", "YELLOWCART_CHECKPOINT_KEY"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    order_ids = asyncio.run(paid_orders(data_dir, 2))
    private, public = tmp_path / "auditor.pem", tmp_path / "auditor.pub.pem"
    made = runner.invoke(
        app, ["checkpoint-key", "--private", str(private), "--public", str(public)]
    )
    assert made.exit_code == 0, made.output
    checkpoint = tmp_path / "checkpoint.json"
    result = runner.invoke(
        app,
        [
            "checkpoint",
            "--key",
            str(private),
            "--out",
            str(checkpoint),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    return data_dir, checkpoint, public, order_ids


def rewrite_and_rehash(database: Path, stream_id: str, old: str, new: str) -> int:
    """Replace `old` by `new` in the stream's first commit, then reseal every commit of the
    stream after it: the chain is consistent again. Returns the first rewritten version."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT position, first_version, events FROM commits WHERE stream_id = ? "
            "ORDER BY first_version",
            (stream_id,),
        ).fetchall()
        prev_hash = "0" * 64
        rewritten = None
        for position, first_version, events in rows:
            if rewritten is None and old in events:
                events, rewritten = events.replace(old, new), first_version
            new_hash = seal_canonical(prev_hash, canonical_json(json.loads(events)))
            db.execute(
                "UPDATE commits SET events = ?, prev_hash = ?, hash = ? WHERE position = ?",
                (events, prev_hash, new_hash, position),
            )
            prev_hash = new_hash
    assert rewritten is not None, f"{old} not in {stream_id}"
    return rewritten


def test_a_rewritten_and_rehashed_history_passes_verify_but_not_the_checkpoint(
    sealed: tuple[Path, Path, Path, list[str]], tmp_path: Path
) -> None:
    data_dir, checkpoint, public, (order_id, _) = sealed
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    stream = f"payment-{order_id}"
    sealed_version = json.loads(checkpoint.read_text())["stores"]["payment"][stream]["version"]
    assert sealed_version >= 2, "the rewrite is below the sealed head"
    rewrite_and_rehash(copy / "payment.db", stream, '"amount":178000', '"amount":17800')

    plain = runner.invoke(app, ["verify", "--data-dir", str(copy)])
    assert plain.exit_code == 0, plain.output  # the chain is consistent again

    against = runner.invoke(
        app,
        [
            "verify",
            "--against",
            str(checkpoint),
            "--public-key",
            str(public),
            "--json",
            "--data-dir",
            str(copy),
        ],
    )
    assert against.exit_code == EXIT_CHECKPOINT, against.output
    report = json.loads(against.stdout)
    assert report["chain_ok"] is True
    (mismatch,) = report["checkpoint"]["mismatches"]
    assert (mismatch["service"], mismatch["stream_id"], mismatch["version"]) == (
        "payment",
        stream,
        sealed_version,
    )
    assert mismatch["kind"] == "rewritten"

    table = runner.invoke(
        app,
        [
            "verify",
            "--against",
            str(checkpoint),
            "--public-key",
            str(public),
            "--data-dir",
            str(copy),
        ],
    )
    assert table.exit_code == EXIT_CHECKPOINT
    assert stream in table.output and str(sealed_version) in table.output

    untouched = runner.invoke(
        app,
        [
            "verify",
            "--against",
            str(checkpoint),
            "--public-key",
            str(public),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert untouched.exit_code == 0, untouched.output
    assert "extends the checkpoint" in untouched.output


def test_the_log_may_grow_after_a_checkpoint(
    sealed: tuple[Path, Path, Path, list[str]],
) -> None:
    data_dir, checkpoint, public, _ = sealed
    asyncio.run(paid_orders(data_dir, 1))
    result = runner.invoke(
        app,
        [
            "verify",
            "--against",
            str(checkpoint),
            "--public-key",
            str(public),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output


def test_a_store_cut_back_behind_the_checkpoint_fails_naming_the_stream(
    sealed: tuple[Path, Path, Path, list[str]],
) -> None:
    data_dir, checkpoint, public, (order_id, _) = sealed
    with sqlite3.connect(data_dir / "payment.db") as db:
        db.execute(
            "DELETE FROM commits WHERE stream_id = ? AND first_version > 1",
            (f"payment-{order_id}",),
        )
    result = runner.invoke(
        app,
        [
            "verify",
            "--against",
            str(checkpoint),
            "--public-key",
            str(public),
            "--json",
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == EXIT_CHECKPOINT
    (mismatch,) = json.loads(result.stdout)["checkpoint"]["mismatches"]
    assert (mismatch["stream_id"], mismatch["kind"]) == (f"payment-{order_id}", "missing")


def test_an_altered_checkpoint_or_another_key_is_refused(
    sealed: tuple[Path, Path, Path, list[str]], tmp_path: Path
) -> None:
    data_dir, checkpoint, _public, (order_id, _) = sealed
    document = json.loads(checkpoint.read_text())
    head = document["stores"]["payment"][f"payment-{order_id}"]
    head["version"] -= 1  # a forger moving the seal back before their rewrite
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    result = runner.invoke(app, ["verify", "--against", str(forged), "--data-dir", str(data_dir)])
    assert result.exit_code == EXIT_CHECKPOINT and "was altered" in result.output

    other_private, other_public = tmp_path / "other.pem", tmp_path / "other.pub.pem"
    runner.invoke(
        app, ["checkpoint-key", "--private", str(other_private), "--public", str(other_public)]
    )
    result = runner.invoke(
        app,
        [
            "verify",
            "--against",
            str(checkpoint),
            "--public-key",
            str(other_public),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == EXIT_CHECKPOINT and "not signed with the public key" in result.output


def test_checkpoint_refuses_a_broken_chain_and_dry_run_writes_nothing(
    sealed: tuple[Path, Path, Path, list[str]], tmp_path: Path
) -> None:
    data_dir, _, _, _ = sealed
    key = tmp_path / "auditor.pem"
    out = tmp_path / "again.json"
    dry = runner.invoke(
        app,
        [
            "checkpoint",
            "--key",
            str(key),
            "--out",
            str(out),
            "--dry-run",
            "--data-dir",
            str(data_dir),
        ],
    )
    assert dry.exit_code == 0 and "would seal" in dry.output and not out.exists()

    with sqlite3.connect(data_dir / "order.db") as db:
        db.execute(
            "UPDATE commits SET events = replace(events, '\"quantity\":2', '\"quantity\":3')"
        )
    broken = runner.invoke(
        app, ["checkpoint", "--key", str(key), "--out", str(out), "--data-dir", str(data_dir)]
    )
    assert broken.exit_code == 3 and "not sealed" in broken.output and not out.exists()

    missing_key = runner.invoke(
        app, ["checkpoint", "--key", str(tmp_path / "none.pem"), "--data-dir", str(data_dir)]
    )
    assert missing_key.exit_code == EXIT_REFUSED


def test_audit_html_is_a_self_contained_report_with_checkpoint_status(
    sealed: tuple[Path, Path, Path, list[str]], tmp_path: Path
) -> None:
    data_dir, checkpoint, public, (order_id, _) = sealed
    out = tmp_path / "report.html"
    result = runner.invoke(
        app,
        [
            "audit",
            order_id,
            "--format",
            "html",
            "--out",
            str(out),
            "--against",
            str(checkpoint),
            "--public-key",
            str(public),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    for absent in ("<script", "<link", "src=", "http://", "https://"):
        assert absent not in page
    assert f"payment-{order_id}" in page and "PaymentReceived" in page
    assert "the log extends it" in page and "auditor&#39;s key" in page
