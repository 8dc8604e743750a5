"""The SQLite DocumentStore: one `documents` table keyed by (collection, key), JSON documents.

It may share its file with the service's event store (separate tables, separate connection).
Filters and ordering use `json_extract` on top-level fields; field names are bound as JSON-path
parameters, never spliced into the SQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite
import orjson
from pydantic_core import from_json

from shared.kernel.eventstore.sqlite import Synchronous, connect, translated
from shared.kernel.readmodel.port import Document, DocumentStore, Scalar

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;
"""


def json_path(field: str) -> str:
    """The JSON path of a top-level field, quoted so any field name is taken literally."""
    return '$."' + field.replace('"', '""') + '"'


def _dumps(document: Document) -> str:
    """orjson where it can (several times faster than the standard library on a view with a
    long timeline); the standard library for what it cannot write (integers beyond 64 bits)."""
    try:
        return orjson.dumps(document).decode()
    except TypeError:
        return json.dumps(document)


def _loads(text: str) -> Document:
    """pydantic-core's parser: fast, and exact for integers beyond 64 bits (orjson's is not)."""
    return dict(from_json(text, cache_strings="keys"))


class SQLiteDocumentStore(DocumentStore):
    def __init__(self, connection: aiosqlite.Connection) -> None:
        """Use `await SQLiteDocumentStore.open(path)`."""
        self._connection = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, *, synchronous: Synchronous = "NORMAL") -> SQLiteDocumentStore:
        connection = await connect(path, synchronous=synchronous)
        try:
            await translated(connection.executescript(SCHEMA))
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def _fetch(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        async with self._lock:
            return list(await translated(self._connection.execute_fetchall(sql, parameters)))

    async def get(self, collection: str, key: str) -> Document | None:
        rows = await self._fetch(
            "SELECT doc FROM documents WHERE collection = ? AND key = ?", (collection, key)
        )
        return _loads(rows[0][0]) if rows else None

    async def put(self, collection: str, key: str, document: Document) -> None:
        await self._fetch(
            "INSERT INTO documents (collection, key, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (collection, key) DO UPDATE SET doc = excluded.doc",
            (collection, key, _dumps(document)),
        )

    async def put_if(
        self, collection: str, key: str, document: Document, match: Mapping[str, Scalar] | None
    ) -> bool:
        if match is None:
            sql = (
                "INSERT INTO documents (collection, key, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, key) DO NOTHING"
            )
            parameters: list[Any] = [collection, key, _dumps(document)]
        else:
            conditions = " ".join("AND json_extract(doc, ?) = ?" for _ in match)
            sql = f"UPDATE documents SET doc = ? WHERE collection = ? AND key = ? {conditions}"
            parameters = [_dumps(document), collection, key]
            for field, value in match.items():
                parameters.extend((json_path(field), value))
        async with self._lock:
            cursor = await translated(self._connection.execute(sql, parameters))
            return bool(cursor.rowcount == 1)

    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        sql = ["SELECT doc FROM documents WHERE collection = ?"]
        parameters: list[Any] = [collection]
        for field, value in (where or {}).items():
            if value is None:
                sql.append("AND json_extract(doc, ?) IS NULL")
                parameters.append(json_path(field))
            else:
                sql.append("AND json_extract(doc, ?) = ?")
                parameters.extend((json_path(field), value))
        if order_by is not None:
            sql.append("ORDER BY json_extract(doc, ?), key")
            parameters.append(json_path(order_by))
        else:
            sql.append("ORDER BY key")
        if limit is not None:
            sql.append("LIMIT ?")
            parameters.append(limit)
        rows = await self._fetch(" ".join(sql), parameters)
        return [_loads(doc) for (doc,) in rows]

    async def drop(self, collection: str) -> None:
        await self._fetch("DELETE FROM documents WHERE collection = ?", (collection,))

    async def copy(self, source: str, target: str) -> None:
        """Replace `target` by `source` in one transaction: readers see the old or the new."""
        async with self._lock:
            await translated(self._connection.execute("BEGIN IMMEDIATE"))
            try:
                await translated(
                    self._connection.execute(
                        "DELETE FROM documents WHERE collection = ?", (target,)
                    )
                )
                await translated(
                    self._connection.execute(
                        "INSERT INTO documents (collection, key, doc) "
                        "SELECT ?, key, doc FROM documents WHERE collection = ?",
                        (target, source),
                    )
                )
                await translated(self._connection.execute("COMMIT"))
            except BaseException:
                await asyncio.shield(self._rollback())
                raise

    async def _rollback(self) -> None:
        try:
            await self._connection.execute("ROLLBACK")
        except Exception as error:
            if "no transaction is active" not in str(error):
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._connection.close()
