"""Projections, in one style: a pure fold over envelopes, and a writer that stores its result.

A `Projection` names its collection, says which document an envelope belongs to (`key_of`),
and folds one envelope into that document (`fold`: no I/O, no clock; None when the envelope
changes nothing, e.g. because it was applied already). The same fold serves the live consumer
(`project`, which writes with a compare-and-set on the document's revision, so several
consumers or replicas may write one view without losing an event) and every rebuild from the
log (`rebuild`, which writes nothing), so a replay yields the documents the live view holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.readmodel.port import ConditionalWrite, Document, DocumentStore

Fold = Callable[[Document | None, Envelope], Document | None]
WRITE_ATTEMPTS = 20


class ViewWriteContention(Exception):
    """Too many concurrent writers of one document; the consumer retries the event."""


@dataclass(frozen=True)
class Projection:
    collection: str
    key_of: Callable[[Envelope], str | None]
    fold: Fold

    def apply(self, current: Document | None, envelope: Envelope) -> Document | None:
        """The document after `envelope`, its `revision` one higher; None if nothing changed.

        The revision counts the envelopes that changed the document: deterministic, so a
        rebuilt document equals the live one, and the compare-and-set token of the writer."""
        folded = self.fold(current, envelope)
        if folded is None:
            return None
        return {**folded, "revision": (current or {}).get("revision", 0) + 1}


async def project(documents: DocumentStore, projection: Projection, envelope: Envelope) -> None:
    """Fold `envelope` into its stored document (a consumer's handler)."""
    key = projection.key_of(envelope)
    if key is None:
        return
    for _ in range(WRITE_ATTEMPTS):
        current = await documents.get(projection.collection, key)
        document = projection.apply(current, envelope)
        if document is None:
            return
        expected = None if current is None else {"revision": current["revision"]}
        if await documents.put_if(projection.collection, key, document, expected):
            return
    raise ViewWriteContention(f"{projection.collection}/{key}")


async def project_many(
    documents: DocumentStore, projection: Projection, envelopes: Iterable[Envelope]
) -> None:
    """Fold a batch of envelopes: the batch's documents are read in one go and written in one
    go (one transaction where the store can), each once for all of its envelopes (in their
    order), each under its own compare-and-set. A document another writer changed meanwhile
    is folded again from what it now holds, as `project` does."""
    by_key: dict[str, list[Envelope]] = {}
    for envelope in envelopes:
        key = projection.key_of(envelope)
        if key is not None:
            by_key.setdefault(key, []).append(envelope)
    if not by_key:
        return
    stored = await documents.get_many(projection.collection, list(by_key))
    writes: list[ConditionalWrite] = []
    for key, group in by_key.items():
        current = stored.get(key)
        document = _folded(projection, current, group)
        if document is not None:
            expected = None if current is None else {"revision": current["revision"]}
            writes.append((key, document, expected))
    for key in await documents.put_many_if(projection.collection, writes):
        await _project_group(documents, projection, key, by_key[key])


def _folded(
    projection: Projection, current: Document | None, group: Sequence[Envelope]
) -> Document | None:
    """`current` after every envelope of `group`; None when none of them changed it."""
    document = current
    for envelope in group:
        document = projection.apply(document, envelope) or document
    return None if document is current else document


async def _project_group(
    documents: DocumentStore, projection: Projection, key: str, group: Sequence[Envelope]
) -> None:
    for _ in range(WRITE_ATTEMPTS):
        current = await documents.get(projection.collection, key)
        document = _folded(projection, current, group)
        if document is None:
            return
        expected = None if current is None else {"revision": current["revision"]}
        if await documents.put_if(projection.collection, key, document, expected):
            return
    raise ViewWriteContention(f"{projection.collection}/{key}")


@dataclass(frozen=True)
class Projector:
    """A consumer's handlers that keep `projection` in `documents`: for one event, or a batch."""

    documents: DocumentStore
    projection: Projection

    async def one(self, envelope: Envelope, event: DomainEvent) -> None:
        await project(self.documents, self.projection, envelope)

    async def many(self, events: Sequence[tuple[Envelope, DomainEvent]]) -> None:
        await project_many(self.documents, self.projection, (envelope for envelope, _ in events))


def rebuild(
    projection: Projection,
    envelopes: Iterable[Envelope],
    into: dict[str, Document] | None = None,
) -> dict[str, Document]:
    """Every document the envelopes fold into, in memory; nothing is written anywhere."""
    documents = {} if into is None else into
    for envelope in envelopes:
        key = projection.key_of(envelope)
        if key is None:
            continue
        document = projection.apply(documents.get(key), envelope)
        if document is not None:
            documents[key] = document
    return documents
