"""Open a service's stores from a URL : the composition root's only storage switch.

- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:` — the
  embedded default; the event store and the document store of one URL share the file
  (separate tables, separate connections).
- `mongodb://…/<database>` or `mongodb+srv://…/<database>` — PyMongo's AsyncMongoClient;
  the database defaults to `yellowcart`.
- `memory://` — the in-process fakes (each call opens a new, empty store).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.eventstore.mongo import MongoEventStore
from shared.kernel.eventstore.port import EventStore
from shared.kernel.eventstore.sqlite import SQLiteEventStore, sqlite_path
from shared.kernel.readmodel.memory import InMemoryDocumentStore
from shared.kernel.readmodel.mongo import MongoDocumentStore
from shared.kernel.readmodel.port import DocumentStore
from shared.kernel.readmodel.sqlite import SQLiteDocumentStore

DEFAULT_MONGO_DATABASE = "yellowcart"
MONGO_SCHEMES = ("mongodb", "mongodb+srv")


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme in ("sqlite", "memory", *MONGO_SCHEMES):
        return scheme
    raise ValueError(
        f"unknown store URL {url!r}: use sqlite:///path/to/file.db, "
        "mongodb://host/database (or mongodb+srv://…), or memory://"
    )


def mongo_database_name(url: str) -> str:
    return urlsplit(url).path.strip("/") or DEFAULT_MONGO_DATABASE


def _mongo_client(url: str) -> Any:
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(url, tz_aware=True)


async def open_event_store(url: str) -> EventStore:
    scheme = _scheme(url)
    if scheme == "memory":
        return InMemoryEventStore()
    if scheme == "sqlite":
        return await SQLiteEventStore.open(sqlite_path(url))
    client = _mongo_client(url)
    try:
        return await MongoEventStore.open(client[mongo_database_name(url)], client=client)
    except BaseException:
        await client.close()
        raise


async def open_document_store(url: str) -> DocumentStore:
    scheme = _scheme(url)
    if scheme == "memory":
        return InMemoryDocumentStore()
    if scheme == "sqlite":
        return await SQLiteDocumentStore.open(sqlite_path(url))
    client = _mongo_client(url)
    return MongoDocumentStore(client[mongo_database_name(url)], client=client)
