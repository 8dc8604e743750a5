"""The document store port that projections write their views to.

Small on purpose: views are documents keyed by id inside named collections, filtered by
equality on top-level fields. A replay writes into a fresh collection and can swap it in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

Document = dict[str, Any]
Scalar = str | int | float | bool | None


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
