"""An in-memory DocumentStore: the fake for fast tests. Documents are copied in and out, so a
caller that mutates a document it got (or put) does not change what is stored."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from shared.kernel.readmodel.port import Document, DocumentStore, Scalar


def sort_key(field: str) -> Any:
    """Ascending by `field`, missing or null first (as SQLite and MongoDB order them)."""

    def key(item: tuple[str, Document]) -> tuple[bool, Any, str]:
        value = item[1].get(field)
        return (value is not None, value, item[0])

    return key


class InMemoryDocumentStore(DocumentStore):
    def __init__(self) -> None:
        self._collections: dict[str, dict[str, Document]] = {}

    async def get(self, collection: str, key: str) -> Document | None:
        document = self._collections.get(collection, {}).get(key)
        return copy.deepcopy(document) if document is not None else None

    async def put(self, collection: str, key: str, document: Document) -> None:
        self._collections.setdefault(collection, {})[key] = copy.deepcopy(document)

    async def put_if(
        self, collection: str, key: str, document: Document, match: Mapping[str, Scalar] | None
    ) -> bool:
        stored = self._collections.get(collection, {}).get(key)
        if match is None and stored is not None:
            return False
        if match is not None and (
            stored is None or any(stored.get(field) != value for field, value in match.items())
        ):
            return False
        await self.put(collection, key, document)
        return True

    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        conditions = dict(where or {})
        items = sorted(
            (
                (key, document)
                for key, document in self._collections.get(collection, {}).items()
                if all(document.get(field) == value for field, value in conditions.items())
            ),
            key=sort_key(order_by) if order_by is not None else lambda item: item[0],
        )
        if limit is not None:
            items = items[:limit]
        return [copy.deepcopy(document) for _, document in items]

    async def drop(self, collection: str) -> None:
        self._collections.pop(collection, None)

    async def copy(self, source: str, target: str) -> None:
        self._collections[target] = copy.deepcopy(self._collections.get(source, {}))

    async def close(self) -> None:
        self._collections = {}
