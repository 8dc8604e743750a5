"""The hash chain of a stream's commits: sealing new commits and verifying old ones.

Each commit stores `prev_hash` (the hash of the stream's previous commit, GENESIS_HASH for the
first) and `hash` = chain_hash(prev_hash, its events' wire form). Rewriting any stored event
changes its commit's hash; rewriting a hash breaks the next commit's link. Every adapter uses
`check_new_commit` and `seal` so the rules and the hashes are the same on every backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.kernel.events.canonical import GENESIS_HASH, chain_hash
from shared.kernel.events.envelope import Envelope, canonical_events
from shared.kernel.eventstore.port import Commit, NewCommit

BreakKind = Literal["hash_mismatch", "broken_link", "version_gap"]


@dataclass(frozen=True)
class ChainBreak:
    """One place where a stream's stored history is not what was written."""

    stream_id: str
    position: int
    first_version: int
    kind: BreakKind
    detail: str


def check_new_commit(commit: NewCommit) -> None:
    """Refuse a malformed commit before it reaches storage (a programming error, not a race)."""
    if commit.expected_version < 0:
        raise ValueError(f"expected_version must be >= 0, got {commit.expected_version}")
    if not commit.events:
        raise ValueError(f"a commit to {commit.stream_id} must hold at least one event")
    for offset, event in enumerate(commit.events, start=1):
        if event.stream_id != commit.stream_id:
            raise ValueError(
                f"event {event.event_id} belongs to {event.stream_id}, not {commit.stream_id}"
            )
        if event.stream_version != commit.expected_version + offset:
            raise ValueError(
                f"event {event.event_id} has version {event.stream_version}, "
                f"expected {commit.expected_version + offset}"
            )
    timer_ids = [timer.timer_id for timer in commit.timers]
    if len(set(timer_ids)) != len(timer_ids):
        raise ValueError(f"a commit to {commit.stream_id} repeats a timer id")


def seal(prev_hash: str, wires: list[dict[str, Any]]) -> str:
    """The hash of a new commit (its events' wire forms) following a commit hashed `prev_hash`."""
    return chain_hash(prev_hash, wires)


def seal_canonical(prev_hash: str, canonical_events: bytes) -> str:
    """`chain_hash` for events already serialised with `canonical_json`.

    An adapter that stores the canonical bytes serialises once instead of twice (the largest
    cost of an append). The contract suite checks this equals `chain_hash`.
    """
    digest = hashlib.sha256()
    digest.update(prev_hash.encode())
    digest.update(canonical_events)
    return digest.hexdigest()


def verify_chain(commits: Sequence[Commit]) -> list[ChainBreak]:
    """Recompute every link; [] means the history is intact.

    Commits may come from several streams (e.g. a `read_all`); each stream is checked on its
    own, in the order its commits appear.
    """
    verifier = ChainVerifier()
    return [chain_break for commit in commits for chain_break in verifier.check(commit)]


@dataclass(frozen=True)
class StreamHead:
    """Where a stream's verified history ends: its last version, that commit's hash and
    store position."""

    version: int
    hash: str
    position: int


class ChainVerifier:
    """`verify_chain` one commit at a time, for a log read in batches: it keeps only each
    stream's head (version, hash, position), never the commits or their events, so its
    memory grows with the number of streams, not with the length of the log."""

    def __init__(self) -> None:
        self.heads: dict[str, StreamHead] = {}

    def check(self, commit: Commit) -> list[ChainBreak]:
        """The breaks `commit` shows after the commits of its stream seen so far."""
        breaks: list[ChainBreak] = []
        before = self.heads.get(commit.stream_id)
        expected_prev = before.hash if before is not None else GENESIS_HASH
        expected_first = before.version + 1 if before is not None else 1
        if commit.first_version != expected_first:
            breaks.append(
                _break(
                    commit,
                    "version_gap",
                    f"starts at {commit.first_version}, expected {expected_first}",
                )
            )
        if commit.prev_hash != expected_prev:
            breaks.append(
                _break(commit, "broken_link", "prev_hash is not the previous commit's hash")
            )
        recomputed = seal_canonical(commit.prev_hash, canonical_events(commit.events))
        if recomputed != commit.hash:
            breaks.append(_break(commit, "hash_mismatch", "events differ from what was hashed"))
        self.heads[commit.stream_id] = StreamHead(commit.last_version, commit.hash, commit.position)
        return breaks


def _break(commit: Commit, kind: BreakKind, detail: str) -> ChainBreak:
    return ChainBreak(
        stream_id=commit.stream_id,
        position=commit.position,
        first_version=commit.first_version,
        kind=kind,
        detail=detail,
    )


_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)
_new_envelope = Envelope.__new__
_set = object.__setattr__
_parse_time = datetime.fromisoformat


def stored_envelope(wire: dict[str, Any]) -> Envelope:
    """Rebuild an Envelope from its stored wire form without validating it again.

    Safe because every stored event was a validated Envelope when it was appended
    (`check_new_commit`), and an edit made underneath shows up in `verify_chain`. Validation
    would cost several times the read itself; this is `model_construct` minus its per-field
    default handling (every field is present in a wire form). The contract suite checks that
    a loaded envelope equals the one appended and serialises to the same wire form.
    The envelope takes ownership of `wire` (a dict freshly decoded from storage).
    """
    wire["occurred_at"] = _parse_time(wire["occurred_at"])
    envelope = _new_envelope(Envelope)
    _set(envelope, "__dict__", wire)
    _set(envelope, "__pydantic_fields_set__", _ENVELOPE_FIELDS)
    _set(envelope, "__pydantic_extra__", None)
    _set(envelope, "__pydantic_private__", None)
    return envelope


_new_commit = object.__new__


def stored_commit(
    position: int,
    stream_id: str,
    first_version: int,
    events: tuple[Envelope, ...],
    topic: str,
    partition_key: str,
    causation_id: str | None,
    prev_hash: str,
    hash_: str,
    published: bool,
    handler: str = "",
    trace_context: str = "",
) -> Commit:
    """A `Commit` from values that are already right, without the frozen dataclass's
    `__init__` (one `object.__setattr__` per field, a third of a commit's read cost after
    decoding). The result is an ordinary Commit: same fields, equality, hash and repr; the
    contract suite compares loaded commits with appended ones.
    """
    commit: Commit = _new_commit(Commit)
    _set(
        commit,
        "__dict__",
        {
            "position": position,
            "stream_id": stream_id,
            "first_version": first_version,
            "events": events,
            "topic": topic,
            "partition_key": partition_key,
            "causation_id": causation_id,
            "prev_hash": prev_hash,
            "hash": hash_,
            "published": published,
            "handler": handler,
            "trace_context": trace_context,
        },
    )
    return commit
