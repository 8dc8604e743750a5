"""The MongoDB DocumentStore: one MongoDB collection per view, `_id` = the document's key.

View collections are named `view_<collection>` so they never collide with the event store's
collections in the same database. Write and read concern are `majority`, set explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from shared.kernel.eventstore.mongo import majority, translated_errors
from shared.kernel.readmodel.port import Document, DocumentStore, Scalar

PREFIX = "view_"


def _stored(document: Mapping[str, Any]) -> Document:
    return {field: value for field, value in document.items() if field != "_id"}


class MongoDocumentStore(DocumentStore):
    def __init__(self, database: Any, *, client: Any = None) -> None:
        """`client`, if given, is closed by `close` (the store opened it)."""
        self._database = database
        self._client = client

    def _collection(self, name: str) -> Any:
        return majority(self._database, PREFIX + name)

    async def get(self, collection: str, key: str) -> Document | None:
        with translated_errors():
            document = await self._collection(collection).find_one({"_id": key})
        return _stored(document) if document is not None else None

    async def put(self, collection: str, key: str, document: Document) -> None:
        with translated_errors():
            await self._collection(collection).replace_one(
                {"_id": key}, {**_stored(document), "_id": key}, upsert=True
            )

    async def put_if(
        self, collection: str, key: str, document: Document, match: Mapping[str, Scalar] | None
    ) -> bool:
        stored = {**_stored(document), "_id": key}
        with translated_errors():
            if match is None:
                try:
                    await self._collection(collection).insert_one(stored)
                except DuplicateKeyError:
                    return False
                return True
            result = await self._collection(collection).replace_one({"_id": key, **match}, stored)
            return bool(result.matched_count == 1)

    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        sort = [(order_by, ASCENDING), ("_id", ASCENDING)] if order_by else [("_id", ASCENDING)]
        with translated_errors():
            cursor = self._collection(collection).find(dict(where or {})).sort(sort)
            if limit is not None:
                cursor = cursor.limit(limit)
            documents = await cursor.to_list(None)
        return [_stored(document) for document in documents]

    async def drop(self, collection: str) -> None:
        with translated_errors():
            await self._collection(collection).drop()

    async def copy(self, source: str, target: str) -> None:
        """Not atomic: readers of `target` may briefly see it empty or partly copied."""
        with translated_errors():
            documents = await self._collection(source).find({}).to_list(None)
            destination = self._collection(target)
            await destination.drop()
            if documents:
                await destination.insert_many(documents)

    async def close(self) -> None:
        if self._client is not None:
            with translated_errors():
                await self._client.close()
