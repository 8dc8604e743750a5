"""Signed checkpoints: tamper evidence that does not live in the stores it vouches for.

The hash chain proves a stream is *consistent*: every commit's hash covers its events and the
previous hash. Someone who can write to a store can still rewrite an event and recompute every
later hash; the chain is then consistent again and `verify` passes. A checkpoint closes that
gap: `yellowcart checkpoint` records the head (last version, hash, position) of every stream of
every store and signs the record with an Ed25519 key the auditor holds. Kept outside the
system, it lets `verify --against FILE` prove that today's log still *extends* each sealed
head: the commit that ended at the sealed version still carries the sealed hash, so nothing up
to it was changed (each hash covers all history before it). A rewrite before the seal fails,
naming the stream and the sealed version; a store rolled back behind the seal fails too.

The file is small JSON: the heads and a signature over their canonical JSON (the same
canonical form the chain hashes, `shared.kernel.events.canonical`), made with the
`cryptography` package's Ed25519. What it cannot catch is in docs/ARCHITECTURE.md (threat
model): history written after the last checkpoint, and anyone who holds the signing key.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
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
    """The checkpoint file cannot be trusted or read (bad signature, wrong key, bad format)."""


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


def generate_key(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair as PEM files (the private one readable by its owner only)."""
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 public key")
    return key


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(
    heads: dict[str, dict[str, StreamHead]], sealed_at: datetime, key: Ed25519PrivateKey
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
            "public_key": base64.b64encode(_raw(key.public_key())).decode(),
            "value": base64.b64encode(key.sign(canonical_json(body))).decode(),
        },
    }


@dataclass(frozen=True)
class Checkpoint:
    sealed_at: str
    heads: dict[str, dict[str, StreamHead]]
    key_pinned: bool  # verified with a key the auditor supplied, not only the file's own


def open_checkpoint(path: Path, public_key: Ed25519PublicKey | None = None) -> Checkpoint:
    """Read a checkpoint and check its signature (with `public_key` when given)."""
    try:
        document = json.loads(path.read_text())
        signature = document.pop("signature")
        if document.get("format") != FORMAT or signature.get("algorithm") != "Ed25519":
            raise CheckpointError(f"{path} is not a {FORMAT} file")
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"]))
        value = base64.b64decode(signature["value"])
        heads = {
            service: {stream: StreamHead(**head) for stream, head in streams.items()}
            for service, streams in document["stores"].items()
        }
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if public_key is not None and _raw(public_key) != _raw(embedded):
        raise CheckpointError(f"{path} was not signed with the public key given")
    try:
        (public_key or embedded).verify(value, canonical_json(document))
    except InvalidSignature:
        raise CheckpointError(
            f"the signature of {path} does not match its contents: the file was altered"
        ) from None
    return Checkpoint(document["sealed_at"], heads, key_pinned=public_key is not None)


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
                f"to {commit.hash[:16]}…, the checkpoint of {self.checkpoint.sealed_at} sealed "
                f"{sealed.hash[:16]}…",
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
                        f"(sealed {self.checkpoint.sealed_at}): events were removed",
                    )
        return self.mismatches

    def _mismatch(
        self, service: str, stream: str, version: int, kind: MismatchKind, detail: str
    ) -> None:
        self.mismatches.append(CheckpointMismatch(service, stream, version, kind, detail))
