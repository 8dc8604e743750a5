"""The DocumentStore contract: every read-model adapter (and the fake) passes these tests."""

from __future__ import annotations

import asyncio

import pytest

from shared.kernel.readmodel.port import DocumentStore
from tests.contract.conftest import Backend


@pytest.fixture
async def documents(backend: Backend) -> DocumentStore:
    return await backend.open_documents()


def order_view(order_id: str, status: str, placed_at: str, **extra: object) -> dict[str, object]:
    return {
        "order_id": order_id,
        "status": status,
        "placed_at": placed_at,
        "total": {"amount": 150_000, "currency": "IDR"},
        "lines": [{"sku": "SKU-1", "qty": 2}],
        **extra,
    }


async def test_a_put_document_is_got_back_whole(documents: DocumentStore) -> None:
    view = order_view("o-1", "awaiting_payment", "2026-03-01T09:00:00Z", paid=False, note=None)

    await documents.put("orders", "o-1", view)

    assert await documents.get("orders", "o-1") == view
    assert await documents.get("orders", "o-2") is None
    assert await documents.get("sellers", "o-1") is None


async def test_put_replaces_the_document_under_its_key(documents: DocumentStore) -> None:
    await documents.put("orders", "o-1", order_view("o-1", "awaiting_payment", "t1", buyer="b"))

    await documents.put("orders", "o-1", order_view("o-1", "cancelled", "t1"))

    assert await documents.get("orders", "o-1") == order_view("o-1", "cancelled", "t1")
    assert len(await documents.find("orders")) == 1


async def test_a_caller_mutating_its_copy_changes_nothing_stored(documents: DocumentStore) -> None:
    view = order_view("o-1", "awaiting_payment", "t1")
    await documents.put("orders", "o-1", view)
    view["status"] = "edited"
    got = await documents.get("orders", "o-1")
    assert got is not None
    got["status"] = "edited too"

    assert (await documents.get("orders", "o-1") or {})["status"] == "awaiting_payment"


async def test_find_filters_by_equality_and_orders_ascending(documents: DocumentStore) -> None:
    await documents.put("orders", "o-3", order_view("o-3", "cancelled", "2026-03-03", buyer="b1"))
    await documents.put("orders", "o-1", order_view("o-1", "cancelled", "2026-03-02", buyer="b1"))
    await documents.put("orders", "o-2", order_view("o-2", "to_ship", "2026-03-01", buyer="b1"))
    await documents.put("orders", "o-4", order_view("o-4", "cancelled", "2026-03-01", buyer="b2"))
    await documents.put("other", "o-5", order_view("o-5", "cancelled", "2026-03-01", buyer="b1"))

    found = await documents.find(
        "orders", where={"status": "cancelled", "buyer": "b1"}, order_by="placed_at"
    )

    assert [doc["order_id"] for doc in found] == ["o-1", "o-3"]
    by_date = await documents.find("orders", order_by="placed_at", limit=3)
    assert [doc["order_id"] for doc in by_date] == ["o-2", "o-4", "o-1"]
    assert [d["order_id"] for d in await documents.find("orders")] == ["o-1", "o-2", "o-3", "o-4"]
    assert await documents.find("orders", where={"status": "shipped"}) == []


async def test_find_matches_numbers_booleans_and_null(documents: DocumentStore) -> None:
    await documents.put("sellers", "s-1", {"points": 4, "suspended": False, "note": None})
    await documents.put("sellers", "s-2", {"points": 9, "suspended": True, "note": "late"})

    assert await documents.find("sellers", where={"points": 9}) == [
        {"points": 9, "suspended": True, "note": "late"}
    ]
    assert [d["points"] for d in await documents.find("sellers", where={"suspended": False})] == [4]
    assert [d["points"] for d in await documents.find("sellers", where={"note": None})] == [4]
    assert [d["points"] for d in await documents.find("sellers", order_by="points")] == [4, 9]


async def test_drop_empties_only_that_collection(documents: DocumentStore) -> None:
    await documents.put("orders", "o-1", order_view("o-1", "to_ship", "t"))
    await documents.put("sellers", "s-1", {"points": 1})

    await documents.drop("orders")

    assert await documents.find("orders") == []
    assert await documents.get("sellers", "s-1") == {"points": 1}
    await documents.drop("never-created")


async def test_copy_makes_the_target_hold_exactly_the_source(documents: DocumentStore) -> None:
    await documents.put("orders_replay", "o-1", order_view("o-1", "cancelled", "t1"))
    await documents.put("orders_replay", "o-2", order_view("o-2", "to_ship", "t2"))
    await documents.put("orders", "o-1", order_view("o-1", "awaiting_payment", "t1"))
    await documents.put("orders", "o-9", order_view("o-9", "stale", "t9"))

    await documents.copy("orders_replay", "orders")

    assert await documents.find("orders") == await documents.find("orders_replay")
    assert [d["order_id"] for d in await documents.find("orders")] == ["o-1", "o-2"]
    await documents.put("orders_replay", "o-3", order_view("o-3", "to_ship", "t3"))
    assert len(await documents.find("orders")) == 2


async def test_put_if_inserts_only_a_document_that_is_not_there(documents: DocumentStore) -> None:
    assert await documents.put_if("orders", "o-1", {"revision": 1, "status": "a"}, None)
    assert not await documents.put_if("orders", "o-1", {"revision": 1, "status": "b"}, None)
    assert await documents.get("orders", "o-1") == {"revision": 1, "status": "a"}


async def test_put_if_replaces_only_while_the_stored_document_still_matches(
    documents: DocumentStore,
) -> None:
    await documents.put("orders", "o-1", {"revision": 1, "status": "a"})

    assert await documents.put_if("orders", "o-1", {"revision": 2, "status": "b"}, {"revision": 1})
    assert not await documents.put_if(
        "orders", "o-1", {"revision": 2, "status": "lost"}, {"revision": 1}
    )
    assert not await documents.put_if("orders", "o-9", {"revision": 1}, {"revision": 0})
    assert await documents.get("orders", "o-1") == {"revision": 2, "status": "b"}
    assert await documents.get("orders", "o-9") is None


async def test_of_two_writers_from_the_same_revision_exactly_one_wins(
    documents: DocumentStore,
) -> None:
    await documents.put("orders", "o-1", {"revision": 1, "by": None})
    results = await asyncio.gather(
        *(
            documents.put_if("orders", "o-1", {"revision": 2, "by": writer}, {"revision": 1})
            for writer in ("first", "second")
        )
    )
    assert sorted(results) == [False, True]
    stored = await documents.get("orders", "o-1")
    assert stored is not None and stored["by"] == ("first" if results[0] else "second")


async def test_get_many_returns_the_stored_documents_of_the_keys_asked_for(
    documents: DocumentStore,
) -> None:
    await documents.put("orders", "o-1", {"revision": 1})
    await documents.put("orders", "o-2", {"revision": 2})
    await documents.put("orders_replay", "o-3", {"revision": 3})

    found = await documents.get_many("orders", ["o-1", "o-2", "o-3", "o-9"])

    assert found == {"o-1": {"revision": 1}, "o-2": {"revision": 2}}
    assert await documents.get_many("orders", []) == {}


async def test_put_many_if_decides_each_document_by_its_own_condition(
    documents: DocumentStore,
) -> None:
    await documents.put("orders", "o-1", {"revision": 1, "status": "a"})
    await documents.put("orders", "o-2", {"revision": 5, "status": "moved on"})
    await documents.put("orders", "o-3", {"revision": 1, "status": "there"})

    refused = await documents.put_many_if(
        "orders",
        [
            ("o-1", {"revision": 2, "status": "b"}, {"revision": 1}),  # still matches
            ("o-2", {"revision": 2, "status": "lost"}, {"revision": 1}),  # another writer won
            ("o-3", {"revision": 1, "status": "lost"}, None),  # already exists
            ("o-4", {"revision": 1, "status": "new"}, None),  # new
        ],
    )

    assert refused == {"o-2", "o-3"}
    assert await documents.get_many("orders", ["o-1", "o-2", "o-3", "o-4"]) == {
        "o-1": {"revision": 2, "status": "b"},
        "o-2": {"revision": 5, "status": "moved on"},
        "o-3": {"revision": 1, "status": "there"},
        "o-4": {"revision": 1, "status": "new"},
    }
