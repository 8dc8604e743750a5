"""The event kernel: envelope, contracts, registry, canonical JSON."""

from shared.kernel.events.canonical import GENESIS_HASH, canonical_json, chain_hash
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry, UnknownEventType

__all__ = [
    "GENESIS_HASH",
    "DomainEvent",
    "Envelope",
    "EventRegistry",
    "UnknownEventType",
    "canonical_json",
    "chain_hash",
]
