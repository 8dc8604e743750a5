"""The document store port that projections write their views to.

Small on purpose: views are documents keyed by id inside named collections, filtered by
equality on top-level fields. A replay writes into a fresh collection and can swap it in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

Document = dict[str, Any]
Scalar = str | int | float | bool | None
ConditionalWrite = tuple[str, Document, Mapping[str, Scalar] | None]
"""(key, document, match) for `put_many_if`: `match` as in `put_if`."""


class DocumentStore(ABC):
    @abstractmethod
    async def get(self, collection: str, key: str) -> Document | None: ...

    @abstractmethod
    async def put(self, collection: str, key: str, document: Document) -> None:
        """Insert or replace the document stored under `key`."""

    @abstractmethod
    async def put_if(
        self, collection: str, key: str, document: Document, match: Mapping[str, Scalar] | None
    ) -> bool:
        """Compare-and-set: store `document` only if the stored one still has the top-level
        values `match` (None: only if there is none yet). False when another writer got there
        first; the caller reloads and decides again."""

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        """The stored documents of `keys` (absent keys are left out). Adapters may read them
        in one query; this default reads them one by one."""
        found: dict[str, Document] = {}
        for key in keys:
            document = await self.get(collection, key)
            if document is not None:
                found[key] = document
        return found

    async def put_many_if(self, collection: str, writes: Sequence[ConditionalWrite]) -> set[str]:
        """Each write as `put_if`; the keys whose condition no longer held (nothing written
        for them). Adapters may write the batch in one transaction (one commit rather than one
        per document); keys are still decided one by one, never all or nothing."""
        refused: set[str] = set()
        for key, document, match in writes:
            if not await self.put_if(collection, key, document, match):
                refused.add(key)
        return refused

    @abstractmethod
    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        """Documents whose top-level fields equal `where`, sorted ascending by `order_by`."""

    @abstractmethod
    async def drop(self, collection: str) -> None: ...

    @abstractmethod
    async def copy(self, source: str, target: str) -> None:
        """Make `target` hold exactly the documents of `source` (used to swap in a replay)."""

    @abstractmethod
    async def close(self) -> None: ...
