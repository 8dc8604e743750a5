"""The SQLite DocumentStore: one `documents` table keyed by (collection, key), JSON documents.

It may share its file with the service's event store (separate tables, separate connection).
Filters and ordering use `json_extract` on top-level fields; field names are bound as JSON-path
parameters, never spliced into the SQL.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite
import orjson
from pydantic_core import from_json

from shared.kernel.eventstore.sqlite import (
    Checkpoints,
    Synchronous,
    connect,
    loop_connection,
    run_on_loop,
    translated,
)
from shared.kernel.readmodel.port import ConditionalWrite, Document, DocumentStore, Scalar

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


def _conditional_write(
    collection: str, key: str, document: Document, match: Mapping[str, Scalar] | None
) -> tuple[str, list[Any]]:
    """The statement of `put_if`: it changes one row exactly when the condition holds."""
    if match is None:
        sql = (
            "INSERT INTO documents (collection, key, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (collection, key) DO NOTHING"
        )
        return sql, [collection, key, _dumps(document)]
    conditions = " ".join("AND json_extract(doc, ?) = ?" for _ in match)
    sql = f"UPDATE documents SET doc = ? WHERE collection = ? AND key = ? {conditions}"
    parameters: list[Any] = [_dumps(document), collection, key]
    for field, value in match.items():
        parameters.extend((json_path(field), value))
    return sql, parameters


CHECKPOINT_EVERY_WRITES = 256


class SQLiteDocumentStore(DocumentStore):
    """Point reads and writes (`get`, `put`, `put_if`: one row by its key) run on the event
    loop's thread on a connection of their own, as the event store's appends do, at
    `synchronous=NORMAL` on a file: no fsync, a busy lock retried after an asynchronous sleep,
    WAL checkpoints off the loop. A projection writes a document per order per batch, and the
    thread hop each such statement cost was most of the order view's time. Scans (`find`) and
    the transactional `copy` stay on aiosqlite's thread."""

    def __init__(
        self, connection: aiosqlite.Connection, direct: sqlite3.Connection | None = None
    ) -> None:
        """Use `await SQLiteDocumentStore.open(path)`."""
        self._connection = connection
        self._direct = direct
        self._lock = asyncio.Lock()
        self._checkpoints = Checkpoints(connection, CHECKPOINT_EVERY_WRITES, self._lock)

    @classmethod
    async def open(cls, path: str, *, synchronous: Synchronous = "NORMAL") -> SQLiteDocumentStore:
        connection = await connect(path, synchronous=synchronous)
        try:
            await translated(connection.executescript(SCHEMA))
            direct = None
            if path != ":memory:" and synchronous in ("OFF", "NORMAL"):
                direct = loop_connection(path, synchronous)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, direct)

    async def _point(self, sql: str, parameters: Sequence[Any], *, write: bool) -> Any:
        """One statement about one key: on the loop's thread where possible."""
        if self._direct is None:
            async with self._lock:
                cursor = await translated(self._connection.execute(sql, parameters))
                return await cursor.fetchall() if not write else cursor.rowcount
        direct = self._direct

        def run(connection: sqlite3.Connection) -> Any:
            cursor = connection.execute(sql, parameters)
            return cursor.rowcount if write else cursor.fetchall()

        result = await run_on_loop(direct, run)
        if write:
            self._checkpoints.wrote()
        return result

    async def _fetch(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        async with self._lock:
            return list(await translated(self._connection.execute_fetchall(sql, parameters)))

    async def get(self, collection: str, key: str) -> Document | None:
        rows = await self._point(
            "SELECT doc FROM documents WHERE collection = ? AND key = ?",
            (collection, key),
            write=False,
        )
        return _loads(rows[0][0]) if rows else None

    async def put(self, collection: str, key: str, document: Document) -> None:
        await self._point(
            "INSERT INTO documents (collection, key, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (collection, key) DO UPDATE SET doc = excluded.doc",
            (collection, key, _dumps(document)),
            write=True,
        )

    async def put_if(
        self, collection: str, key: str, document: Document, match: Mapping[str, Scalar] | None
    ) -> bool:
        sql, parameters = _conditional_write(collection, key, document, match)
        return bool(await self._point(sql, parameters, write=True) == 1)

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        if not keys:
            return {}
        rows = await self._point(
            "SELECT key, doc FROM documents WHERE collection = ? "
            "AND key IN (SELECT value FROM json_each(?))",
            (collection, json.dumps(list(keys))),
            write=False,
        )
        return {key: _loads(doc) for key, doc in rows}

    async def put_many_if(self, collection: str, writes: Sequence[ConditionalWrite]) -> set[str]:
        """One transaction for the batch (one WAL commit, not one per document), each
        document still under its own condition."""
        if self._direct is None or len(writes) < 2:
            return await super().put_many_if(collection, writes)
        statements = [_conditional_write(collection, *write) for write in writes]

        def transaction(connection: sqlite3.Connection) -> set[str]:
            connection.execute("BEGIN IMMEDIATE")
            try:
                refused = {
                    key
                    for key, (sql, parameters) in zip(
                        (key for key, _, _ in writes), statements, strict=True
                    )
                    if connection.execute(sql, parameters).rowcount != 1
                }
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return refused

        refused = await run_on_loop(self._direct, transaction)
        self._checkpoints.wrote()
        return refused

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
        await self._checkpoints.finish()
        if self._direct is not None:
            self._direct.close()
        async with self._lock:
            await self._connection.close()
