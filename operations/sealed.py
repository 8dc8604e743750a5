"""The checkpoints the services sealed, read back from the checkpoint topic.

Every service's lease-holding replica publishes `CheckpointSealed` events (one per part of a
seal) to `checkpoint.events`. The latest *complete* seal of each service (every part of one
`seal_id` present) is what a verifier checks the stores against: `yellowcart checkpoint-fetch`
writes those documents to a file the auditor keeps, `verify --against-topic` and the console
read them straight from the broker. A record that is not a well-formed `CheckpointSealed` is
skipped (counted); the signatures are checked when the documents are opened
(`operations.checkpoint.open_documents`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from operations.deadletters import read_topic
from shared.contracts.events import CHECKPOINT_TOPIC, CheckpointSealed
from shared.kernel.events.envelope import Envelope


@dataclass
class LatestSeals:
    """Each service's latest complete seal: its documents, when, and what was skipped."""

    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # service -> parts
    sealed_at: dict[str, str] = field(default_factory=dict)
    records: int = 0
    malformed: int = 0
    incomplete: int = 0  # seals with parts missing (being published, or lost)

    def all_documents(self) -> list[dict[str, Any]]:
        return [
            document for service in sorted(self.documents) for document in self.documents[service]
        ]


def latest_seals(events: list[CheckpointSealed]) -> LatestSeals:
    """The latest complete seal of each service among `events` (in any order)."""
    result = LatestSeals(records=len(events))
    seals: dict[tuple[str, str], dict[int, CheckpointSealed]] = {}
    for event in events:
        seals.setdefault((event.service, event.seal_id), {})[event.part] = event
    for (service, _), parts in seals.items():
        expected = next(iter(parts.values())).parts
        if set(parts) != set(range(1, expected + 1)):
            result.incomplete += 1
            continue
        sealed_at = max(part.checkpoint.sealed_at for part in parts.values())
        if sealed_at > result.sealed_at.get(service, ""):
            result.sealed_at[service] = sealed_at
            result.documents[service] = [parts[n].document() for n in sorted(parts)]
    return result


async def read_latest_seals(
    bootstrap_servers: str,
    topic: str = CHECKPOINT_TOPIC,
    *,
    security: Mapping[str, Any] | None = None,
) -> LatestSeals:
    """Read the whole checkpoint topic (a day of seals every minute is about 6,000 records a
    service for a small store) and keep each service's latest complete seal. `security`: the
    reader's login (`client_security(settings)`: in compose, the `auditor` principal)."""
    events: list[CheckpointSealed] = []
    malformed = 0
    for record in await read_topic(bootstrap_servers, topic, security=security):
        try:
            envelope = Envelope.model_validate_json(record.value or b"")
            if envelope.event_type != CheckpointSealed.event_type:
                raise ValueError(envelope.event_type)
            events.append(CheckpointSealed.model_validate(envelope.data))
        except (ValidationError, ValueError):
            malformed += 1
    seals = latest_seals(events)
    seals.malformed = malformed
    seals.records += malformed
    return seals
