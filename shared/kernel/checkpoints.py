"""Signed checkpoints: the format, its signature, and the check that a log still extends one.

The hash chain proves a stream is *consistent*: every commit's hash covers its events and the
previous hash. Someone who can write to a store can still rewrite an event and recompute every
later hash; the chain is then consistent again. A checkpoint closes that gap: it records the
head (last version, hash, position) of every stream of a store and signs the record with an
Ed25519 key. Kept outside the store (an auditor's file, a broker topic), it lets a verifier
prove that today's log still *extends* each sealed head: the commit that ended at the sealed
version still carries the sealed hash, so nothing up to it was changed (each hash covers all
history before it). A rewrite before the seal fails, naming the stream and the sealed version;
a store rolled back behind the seal fails too.

A checkpoint document is small JSON: the heads and a signature over their canonical JSON (the
canonical form the chain hashes), made with the `cryptography` package's Ed25519. The same
format is written by `yellowcart checkpoint` (every store into one file) and published by the
services' `CheckpointSealer` (its own store, in parts of at most `PART_STREAMS` streams); a
verifier merges any number of documents (`merge`). What it cannot catch is in
docs/ARCHITECTURE.md (threat model).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.kernel.clock import to_rfc3339
from shared.kernel.events.canonical import canonical_json
from shared.kernel.eventstore.chain import StreamHead
from shared.kernel.eventstore.port import Commit

FORMAT = "yellowcart-checkpoint/1"
MismatchKind = Literal["rewritten", "missing", "resplit"]


class CheckpointError(Exception):
    """The checkpoint cannot be trusted or read (bad signature, wrong key, bad format)."""


@dataclass(frozen=True)
class CheckpointMismatch:
    """A sealed head the log no longer extends."""

    service: str
    stream_id: str
    version: int
    kind: MismatchKind
    detail: str

    def __str__(self) -> str:
        return f"{self.service} {self.stream_id} v{self.version}: {self.detail}"


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"not a PEM private key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError("not an Ed25519 private key")
    return key


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"not a PEM public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError("not an Ed25519 public key")
    return key


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(
    heads: Mapping[str, Mapping[str, StreamHead]], sealed_at: datetime, key: Ed25519PrivateKey
) -> dict[str, Any]:
    """The signed checkpoint document of `heads` (service -> stream -> head)."""
    body = {
        "format": FORMAT,
        "sealed_at": to_rfc3339(sealed_at),
        "stores": {
            service: {stream: asdict(head) for stream, head in sorted(streams.items())}
            for service, streams in sorted(heads.items())
        },
    }
    return {
        **body,
        "signature": {
            "algorithm": "Ed25519",
            "public_key": base64.b64encode(raw_public_key(key.public_key())).decode(),
            "value": base64.b64encode(key.sign(canonical_json(body))).decode(),
        },
    }


@dataclass(frozen=True)
class Checkpoint:
    """Sealed heads, from one document or merged from several (each checked on its own)."""

    sealed_at: str  # the latest seal among the documents
    heads: dict[str, dict[str, StreamHead]]
    key_pinned: bool  # verified with a key the auditor supplied, not only the document's own
    sealed_at_of: dict[str, str]  # service -> when its heads were sealed

    def when(self, service: str) -> str:
        return self.sealed_at_of.get(service, self.sealed_at)


def open_document(
    document: Mapping[str, Any], public_key: Ed25519PublicKey | None = None, source: str = ""
) -> Checkpoint:
    """Check one checkpoint document's signature (with `public_key` when given) and read it."""
    named = source or "the checkpoint"
    try:
        body = {name: value for name, value in document.items() if name != "signature"}
        signature = document["signature"]
        if body.get("format") != FORMAT or signature.get("algorithm") != "Ed25519":
            raise CheckpointError(f"{named} is not a {FORMAT} document")
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"]))
        value = base64.b64decode(signature["value"])
        heads = {
            service: {stream: StreamHead(**head) for stream, head in streams.items()}
            for service, streams in body["stores"].items()
        }
        sealed_at = str(body["sealed_at"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"cannot read {named}: {error}") from error
    if public_key is not None and raw_public_key(public_key) != raw_public_key(embedded):
        raise CheckpointError(f"{named} was not signed with the public key given")
    try:
        (public_key or embedded).verify(value, canonical_json(body))
    except InvalidSignature:
        raise CheckpointError(
            f"the signature of {named} does not match its contents: it was altered"
        ) from None
    return Checkpoint(
        sealed_at,
        heads,
        key_pinned=public_key is not None,
        sealed_at_of=dict.fromkeys(heads, sealed_at),
    )


def merge(checkpoints: Sequence[Checkpoint]) -> Checkpoint:
    """One checkpoint holding the heads of all of them (a later seal of a stream wins)."""
    if not checkpoints:
        raise CheckpointError("no checkpoint to merge")
    ordered = sorted(checkpoints, key=lambda c: c.sealed_at)
    heads: dict[str, dict[str, StreamHead]] = {}
    sealed_at_of: dict[str, str] = {}
    for checkpoint in ordered:
        for service, streams in checkpoint.heads.items():
            heads.setdefault(service, {}).update(streams)
            sealed_at_of[service] = checkpoint.when(service)
    return Checkpoint(
        ordered[-1].sealed_at,
        heads,
        key_pinned=all(c.key_pinned for c in checkpoints),
        sealed_at_of=sealed_at_of,
    )


class ExtensionCheck:
    """Fed every commit of a store in order, finds the sealed heads the log no longer extends.

    Keeps nothing but the set of sealed heads already reached."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.mismatches: list[CheckpointMismatch] = []
        self._reached: set[tuple[str, str]] = set()

    def check(self, service: str, commit: Commit) -> None:
        sealed = self.checkpoint.heads.get(service, {}).get(commit.stream_id)
        if sealed is None or not commit.first_version <= sealed.version <= commit.last_version:
            return
        self._reached.add((service, commit.stream_id))
        if commit.last_version != sealed.version:
            self._mismatch(
                service,
                commit.stream_id,
                sealed.version,
                "resplit",
                f"the sealed head ended a commit; now a commit spans versions "
                f"{commit.first_version}-{commit.last_version}",
            )
        elif commit.hash != sealed.hash:
            self._mismatch(
                service,
                commit.stream_id,
                sealed.version,
                "rewritten",
                f"history up to version {sealed.version} was rewritten: its commit now hashes "
                f"to {commit.hash[:16]}…, the checkpoint of {self.checkpoint.when(service)} "
                f"sealed {sealed.hash[:16]}…",
            )

    def finish(
        self, services: set[str], streams: set[tuple[str, str]] | None = None
    ) -> list[CheckpointMismatch]:
        """The mismatches, once every commit of `services` (or of just the `(service, stream)`
        pairs in `streams`) was checked."""
        for service in sorted(services & set(self.checkpoint.heads)):
            for stream, sealed in self.checkpoint.heads[service].items():
                if streams is not None and (service, stream) not in streams:
                    continue
                if (service, stream) not in self._reached:
                    self._mismatch(
                        service,
                        stream,
                        sealed.version,
                        "missing",
                        f"the stream no longer reaches version {sealed.version} "
                        f"(sealed {self.checkpoint.when(service)}): events were removed",
                    )
        return self.mismatches

    def _mismatch(
        self, service: str, stream: str, version: int, kind: MismatchKind, detail: str
    ) -> None:
        self.mismatches.append(CheckpointMismatch(service, stream, version, kind, detail))
