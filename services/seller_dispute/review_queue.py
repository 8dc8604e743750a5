"""The platform's review queue: every seller filing and where it stands, for operators.

A projection of this service's own `dispute.events` (it reads them back from Kafka like any
other consumer), in the kernel's one projection style: a pure fold into one document per order
(its filings), written by the projection writer. Idempotent: a case's events come in stream
order on one partition, and an event at or below the document's applied version is ignored.
"""

from __future__ import annotations

from typing import Any

from shared.kernel.clock import to_rfc3339
from shared.kernel.events.envelope import Envelope
from shared.kernel.projection import Projection
from shared.kernel.readmodel.port import Document, DocumentStore

COLLECTION = "review_queue"
UNDER_REVIEW = "under_review"


def _order_id(envelope: Envelope) -> str | None:
    order_id = envelope.data.get("order_id")
    return str(order_id) if order_id else None


def fold_filings(document: Document | None, envelope: Envelope) -> Document | None:
    """The order's filings after `envelope`; None when it changes nothing."""
    data = envelope.data
    current = document or {"order_id": data["order_id"], "filings": [], "applied_version": 0}
    if envelope.stream_version <= current["applied_version"]:
        return None
    at = to_rfc3339(envelope.occurred_at)
    filings: list[dict[str, Any]] = [dict(filing) for filing in current["filings"]]
    match envelope.event_type:
        case "SellerCancelRequested":
            filings.append(
                {
                    "filing_id": data["filing_id"],
                    "order_id": data["order_id"],
                    "seller_id": data["seller_id"],
                    "reason": data["reason"],
                    "note": data.get("note"),
                    "request_id": data.get("request_id"),
                    "review_mode": data["review_mode"],
                    "filed_at": at,
                    "status": UNDER_REVIEW,
                    "decided_by": None,
                    "decided_at": None,
                }
            )
        case "SellerCancelApproved" | "SellerCancelRejected":
            decision = "approved" if envelope.event_type == "SellerCancelApproved" else "rejected"
            _move(filings, {data["filing_id"]}, decision, data["decided_by"], at)
        case "CancellationCaseClosed":
            _move(filings, {f["filing_id"] for f in filings}, "closed", None, at)
        case _:
            return None
    return {**current, "filings": filings, "applied_version": envelope.stream_version}


def _move(
    filings: list[dict[str, Any]],
    filing_ids: set[str],
    status: str,
    decided_by: str | None,
    at: str,
) -> None:
    """Decide the filings still under review; an approved buyer request has no filing."""
    for filing in filings:
        if filing["filing_id"] in filing_ids and filing["status"] == UNDER_REVIEW:
            filing.update(status=status, decided_by=decided_by, decided_at=at)


REVIEW_QUEUE = Projection(collection=COLLECTION, key_of=_order_id, fold=fold_filings)


async def listed(documents: DocumentStore, status: str) -> list[dict[str, Any]]:
    """Filings in `status` (or all), oldest first."""
    filings = [
        filing
        for document in await documents.find(COLLECTION)
        for filing in document["filings"]
        if status == "all" or filing["status"] == status
    ]
    return sorted(filings, key=lambda filing: (filing["filed_at"], filing["filing_id"]))
