"""Checkpoint files: the auditor's key pair and checkpoints kept outside the system.

The format, its signature and the extension check live in `shared.kernel.checkpoints` (the
services seal the same documents onto the checkpoint topic). A file holds one document
(`yellowcart checkpoint`: every store's heads under one signature) or a bundle of documents
(`yellowcart checkpoint-fetch`: the latest seal of each service, read from the topic); either
opens into one `Checkpoint`, every document's signature checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.kernel.checkpoints import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    CheckpointMismatch,
    ExtensionCheck,
    merge,
    open_document,
    private_key_from_pem,
    public_key_from_pem,
    seal,
)

BUNDLE_FORMAT = "yellowcart-checkpoints/1"

__all__ = [
    "BUNDLE_FORMAT",
    "FORMAT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "ExtensionCheck",
    "bundle",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "open_checkpoint",
    "open_documents",
    "seal",
]


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
    try:
        return private_key_from_pem(path.read_bytes())
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        return public_key_from_pem(path.read_bytes())
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def bundle(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A file holding several signed documents (each keeps its own signature)."""
    return {"format": BUNDLE_FORMAT, "checkpoints": list(documents)}


def open_documents(
    documents: Iterable[Mapping[str, Any]],
    public_key: Ed25519PublicKey | None = None,
    source: str = "",
) -> Checkpoint:
    """Check every document's signature and merge their heads."""
    opened = [
        open_document(document, public_key, f"{source} (document {number})")
        for number, document in enumerate(documents, start=1)
    ]
    if not opened:
        raise CheckpointError(f"{source} holds no checkpoint")
    return merge(opened)


def open_checkpoint(path: Path, public_key: Ed25519PublicKey | None = None) -> Checkpoint:
    """Read a checkpoint file (one document or a bundle) and check its signatures (with
    `public_key` when given)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if isinstance(document, dict) and document.get("format") == BUNDLE_FORMAT:
        return open_documents(document.get("checkpoints") or [], public_key, str(path))
    if not isinstance(document, dict):
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    return open_document(document, public_key, str(path))
