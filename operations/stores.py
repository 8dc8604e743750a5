"""Which store belongs to which service, for the tools that read more than one.

`audit`, `verify`, `replay`, `checkpoint` and `republish` read each service's own store. They
used to fall back to `YELLOWCART_STORE_URL` — one service's store, the variable every service
container sets — for all four, and then checked the order store four times, or rebuilt the order
view from the order store alone and swapped the result in. They now accept a store per service
only when it was named explicitly, and check before reading anything that:

- every service has a URL (`YELLOWCART_STORE_URLS`, or `--data-dir` for the embedded files);
- the URLs are four different stores (two URLs for one SQLite file or one Mongo database count
  as the same);
- a SQLite file exists (opening a missing one would create it: a typo must not write);
- each store holds only the streams of the service it is named for (stream ids carry their
  aggregate's prefix), checked on the first commits here and on every commit a tool reads.

Any failure is a `StoreSelectionError` whose message says what to set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from operations.catalog import SERVICES
from services.order.domain import Order
from services.payment.domain import PaymentIntent
from services.penalty.domain import SellerRecord
from services.seller_dispute.domain import CancellationCase
from shared.kernel.eventstore.port import EventStore
from shared.kernel.eventstore.sqlite import sqlite_path
from shared.kernel.settings import Settings
from shared.kernel.storage import mongo_database_name, open_event_store

STREAM_PREFIXES: dict[str, str] = {
    "order": Order.stream_prefix,
    "payment": PaymentIntent.stream_prefix,
    "seller-dispute": CancellationCase.stream_prefix,
    "penalty": SellerRecord.stream_prefix,
}
OWNERSHIP_SAMPLE = 200  # commits read from each store before a tool starts


class StoreSelectionError(Exception):
    """The stores a tool was given cannot be trusted to be the services' own; nothing was read
    or written."""


def example_store_urls() -> str:
    return json.dumps(
        {name: f"mongodb://mongo:27017/{name.replace('-', '_')}" for name in SERVICES}
    )


def embedded_store_url(data_dir: Path, service: str) -> str:
    return f"sqlite:///{data_dir}/{service.replace('-', '_')}.db"


def service_store_urls(
    settings: Settings, data_dir: Path | None, services: Iterable[str] = SERVICES
) -> dict[str, str]:
    """The store URL of each of `services`, named explicitly, distinct, existing."""
    wanted = list(services)
    if data_dir is not None:
        urls = {name: embedded_store_url(data_dir, name) for name in wanted}
    else:
        missing = [name for name in wanted if not settings.store_urls.get(name)]
        if missing:
            fallback = (
                f" YELLOWCART_STORE_URL ({settings.store_url}) is one service's store and is "
                "never used for another service."
                if settings.store_url
                else ""
            )
            raise StoreSelectionError(
                f"no store named for {', '.join(missing)}: set YELLOWCART_STORE_URLS to every "
                f"service's own store, e.g. YELLOWCART_STORE_URLS='{example_store_urls()}', "
                f"or pass --data-dir DIR for the embedded SQLite files (DIR/order.db, …).{fallback}"
            )
        urls = {name: settings.store_urls[name] for name in wanted}
    _refuse_shared(urls)
    for name, url in urls.items():
        _refuse_missing_file(name, url)
    return urls


def store_identity(url: str) -> str:
    """Two URLs with one identity reach the same store."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = sqlite_path(url)
        return f"sqlite:{path if path == ':memory:' else Path(path).resolve()}"
    if parts.scheme in ("mongodb", "mongodb+srv"):
        hosts = ",".join(sorted(parts.netloc.rsplit("@", 1)[-1].lower().split(",")))
        return f"mongodb:{hosts}/{mongo_database_name(url)}"
    return url


def _refuse_shared(urls: dict[str, str]) -> None:
    by_identity: dict[str, list[str]] = {}
    for name, url in urls.items():
        by_identity.setdefault(store_identity(url), []).append(name)
    shared = [names for names in by_identity.values() if len(names) > 1]
    if shared:
        described = "; ".join(f"{' and '.join(names)} share {urls[names[0]]}" for names in shared)
        raise StoreSelectionError(
            f"the services' stores must be distinct, but {described}. Set YELLOWCART_STORE_URLS "
            f"to each service's own store, e.g. YELLOWCART_STORE_URLS='{example_store_urls()}'"
        )


def _refuse_missing_file(service: str, url: str) -> None:
    if urlsplit(url).scheme != "sqlite":
        return
    path = sqlite_path(url)
    if path != ":memory:" and not Path(path).is_file():
        raise StoreSelectionError(
            f"the {service} store {url} does not exist (opening it would create an empty one): "
            "check YELLOWCART_STORE_URLS or --data-dir"
        )


def owner_of(stream_id: str) -> str | None:
    prefix = stream_id.split("-", 1)[0]
    for service, stream_prefix in STREAM_PREFIXES.items():
        if prefix == stream_prefix:
            return service
    return None


def check_owner(service: str, stream_id: str) -> None:
    """Refuse a stream that is not `service`'s, naming whose it is."""
    if owner_of(stream_id) != service:
        whose = owner_of(stream_id)
        raise StoreSelectionError(
            f"the store named for {service} holds stream {stream_id}"
            + (f", a {whose} stream" if whose else "")
            + f": it is not the {service} store. Point YELLOWCART_STORE_URLS['{service}'] at the "
            f"{service} service's own store"
        )


async def open_service_stores(urls: dict[str, str]) -> dict[str, EventStore]:
    """Open the stores and check, on their first commits, that each is its service's."""
    stores: dict[str, EventStore] = {}
    try:
        for name, url in urls.items():
            stores[name] = store = await open_event_store(url)
            commits = store.read_all(batch_size=OWNERSHIP_SAMPLE)
            seen = 0
            async for commit in commits:
                check_owner(name, commit.stream_id)
                seen += 1
                if seen >= OWNERSHIP_SAMPLE:
                    break
            close = getattr(commits, "aclose", None)  # an async generator left early
            if close is not None:
                await close()
    except BaseException:
        await close_stores(stores)
        raise
    return stores


async def close_stores(stores: dict[str, EventStore]) -> None:
    for store in stores.values():
        await store.close()
