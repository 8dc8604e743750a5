"""The checkpoint format the services and `yellowcart checkpoint` share: signatures, merging
the documents of several services, and the settings that turn sealing on."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from shared.contracts.events import CheckpointSealed
from shared.kernel.checkpoints import CheckpointError, merge, open_document, seal
from shared.kernel.eventstore.chain import StreamHead
from shared.kernel.settings import Settings

KEY = Ed25519PrivateKey.generate()
HEAD = StreamHead(version=3, hash="a" * 64, position=7)


def test_a_sealed_document_opens_and_an_altered_head_or_another_key_is_refused() -> None:
    document = seal({"order": {"order-o1": HEAD}}, datetime(2026, 12, 5, tzinfo=UTC), KEY)
    opened = open_document(document, KEY.public_key())
    assert opened.heads == {"order": {"order-o1": HEAD}} and opened.key_pinned
    moved = copy.deepcopy(document)
    moved["stores"]["order"]["order-o1"]["version"] = 2
    with pytest.raises(CheckpointError, match="altered"):
        open_document(moved, None, "the seal")
    with pytest.raises(CheckpointError, match="not signed with the public key"):
        open_document(document, Ed25519PrivateKey.generate().public_key())


def test_merged_documents_keep_every_service_and_when_each_was_sealed() -> None:
    early = seal({"order": {"order-o1": HEAD}}, datetime(2026, 12, 5, 1, tzinfo=UTC), KEY)
    late = seal({"payment": {"payment-o1": HEAD}}, datetime(2026, 12, 5, 2, tzinfo=UTC), KEY)
    merged = merge([open_document(late), open_document(early)])
    assert set(merged.heads) == {"order", "payment"}
    assert merged.when("order") == "2026-12-05T01:00:00Z"
    assert merged.sealed_at == "2026-12-05T02:00:00Z" and not merged.key_pinned


def test_the_event_carries_the_document_exactly_as_signed() -> None:
    document = seal({"order": {"order-o1": HEAD}}, datetime(2026, 12, 5, tzinfo=UTC), KEY)
    event = CheckpointSealed.model_validate(
        {"service": "order", "seal_id": "s1", "part": 1, "parts": 1, "checkpoint": document}
    )
    assert event.document() == document and event.partition_key() == "order"
    assert open_document(event.document(), KEY.public_key()).heads["order"]["order-o1"] == HEAD


def test_sealing_on_without_a_key_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="YELLOWCART_CHECKPOINT_KEY_FILE"):
        Settings(checkpoint_interval_s=60)
    assert Settings(checkpoint_interval_s=0).checkpoint_key == ""
