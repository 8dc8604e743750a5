"""The platform's review queue: every seller filing and where it stands, for operators.

A projection of this service's own `dispute.events` (it reads them back from Kafka like any
other consumer), one document per filing. Idempotent: a filing's events arrive in stream
order, and each step only moves a filing forward.
"""

from __future__ import annotations

from typing import Any

from shared.contracts.events import (
    CancellationCaseClosed,
    SellerCancelApproved,
    SellerCancelRejected,
    SellerCancelRequested,
)
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.readmodel.port import DocumentStore

COLLECTION = "review_queue"
STATUSES = ("under_review", "approved", "rejected", "closed")


async def project(documents: DocumentStore, envelope: Envelope, event: DomainEvent) -> None:
    at = envelope.wire()["occurred_at"]
    match event:
        case SellerCancelRequested():
            if await documents.get(COLLECTION, event.filing_id) is None:
                await documents.put(
                    COLLECTION,
                    event.filing_id,
                    {
                        "filing_id": event.filing_id,
                        "order_id": event.order_id,
                        "seller_id": event.seller_id,
                        "reason": event.reason.value,
                        "note": event.note,
                        "request_id": event.request_id,
                        "review_mode": event.review_mode,
                        "filed_at": at,
                        "status": "under_review",
                        "decided_by": None,
                        "decided_at": None,
                    },
                )
        case SellerCancelApproved() | SellerCancelRejected():
            decision = "approved" if isinstance(event, SellerCancelApproved) else "rejected"
            await _move(documents, event.filing_id, decision, event.decided_by, at)
        case CancellationCaseClosed():
            for filing in await documents.find(
                COLLECTION, {"order_id": event.order_id, "status": "under_review"}
            ):
                await _move(documents, filing["filing_id"], "closed", None, at)


async def _move(
    documents: DocumentStore, filing_id: str, status: str, decided_by: str | None, at: str
) -> None:
    filing: dict[str, Any] | None = await documents.get(COLLECTION, filing_id)
    if filing is None or filing["status"] != "under_review":
        return  # an approved buyer request (no filing), or already moved on
    await documents.put(
        COLLECTION,
        filing_id,
        {**filing, "status": status, "decided_by": decided_by, "decided_at": at},
    )


async def listed(documents: DocumentStore, status: str) -> list[dict[str, Any]]:
    where = None if status == "all" else {"status": status}
    return await documents.find(COLLECTION, where, order_by="filed_at")
