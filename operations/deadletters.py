"""The dead-letter workbench: list, show, redrive and purge what consumers gave up on.

A consumer that cannot handle a record after its retries writes it to `<topic>.dlq` with
headers saying why and where from, and which consumer group (and service) rejected it
(`shared.kernel.messaging.consumer.dead_letter_headers`). Every group that fails a record
writes its own copy, so the group header is what tells the copies apart.

- **list / show** read the DLQ topics from the beginning without a consumer group (reading
  changes no offset), filtered by source topic, group, error text and age.
- **redrive** sends a dead letter back to its original topic, key and original headers, with
  `redrive_group` naming the one group that failed it: that group handles it again (its
  handlers are idempotent, so a record it had in fact handled changes nothing), every other
  group skips it (they handled the original; `EventConsumer` counts the skip).
- **purge** retires a dead letter: it no longer appears in `list`. Kafka's DeleteRecords
  would drop the bytes, but the local Tansu broker does not implement it (it closes the
  connection), and a DLQ's bytes are evidence anyway; they leave with the topic's retention.

Every redrive and purge is appended to the ledger topic `yellowcart.dlq.actions` as JSON:
what (the dead letter's topic, partition and offset), which group, who (`--by`, default the
login name), when, and for a redrive where the record went. `list` reads the ledger to hide
what was already dealt with, and a dead letter is redriven at most once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.kernel.clock import Clock, to_rfc3339
from shared.kernel.deadletter_depth import LEDGER_TOPIC
from shared.kernel.messaging import REDRIVE_GROUP_HEADER, RecordSender, dlq_topic, send_and_wait

DLQ_HEADERS = frozenset(
    {
        "error",
        "error_type",
        "error_reason",
        "attempts",
        "source_topic",
        "source_partition",
        "source_offset",
        "failed_at",
        "consumer_group",
        "service",
    }
)
REDRIVE_HEADERS = frozenset({REDRIVE_GROUP_HEADER, "redriven_by", "redriven_at", "redrive_of"})
READ_TIMEOUT_S = 10.0


class DeadLetterError(Exception):
    """A request the workbench refuses (unknown id, already redriven, no group to redrive to)."""


@dataclass(frozen=True)
class DeadLetter:
    id: str  # <dlq topic>:<partition>:<offset>
    dlq_topic: str
    partition: int
    offset: int
    key: str | None
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    consumer_group: str
    service: str
    error_type: str
    error_reason: str
    error: str
    attempts: int | None
    failed_at: str
    event_type: str
    state: str  # "dead" | "redriven" | "purged"
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def summary(self) -> dict[str, Any]:
        described = asdict(self)
        del described["value"], described["headers"]
        return described

    def detail(self) -> dict[str, Any]:
        try:
            value: Any = json.loads(self.value)
        except ValueError:
            value = self.value.decode("utf-8", "replace")
        return {
            **self.summary(),
            "value": value,
            "headers": {name: raw.decode("utf-8", "replace") for name, raw in self.headers},
        }


@dataclass(frozen=True)
class Filters:
    group: str | None = None
    error: str | None = None  # a substring of the error text or type, case-insensitive
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    include_done: bool = False  # also redriven and purged ones

    def admit(self, letter: DeadLetter, now: datetime) -> bool:
        if not self.include_done and letter.state != "dead":
            return False
        if self.group is not None and letter.consumer_group != self.group:
            return False
        if self.error is not None:
            needle = self.error.lower()
            if needle not in letter.error.lower() and needle not in letter.error_type.lower():
                return False
        if self.older_than is not None or self.newer_than is not None:
            try:
                age = now - datetime.fromisoformat(letter.failed_at.replace("Z", "+00:00"))
            except ValueError:
                return False
            if self.older_than is not None and age < self.older_than:
                return False
            if self.newer_than is not None and age > self.newer_than:
                return False
        return True


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    timeout_s: float = READ_TIMEOUT_S,
    *,
    security: Mapping[str, Any] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` now, from the beginning, without a group; [] if no topic.
    `security`: the login (`client_security(settings)`) where the broker asks for one."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **(security or {}),
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        partitions = [
            TopicPartition(topic, partition)
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while not await _at_end(consumer, ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} could not be read to its end in {timeout_s} s")
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(r for r in batch if r.offset < ends[_tp(r)])
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True


def _tp(record: ConsumerRecord[Any, Any]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


async def read_ledger(bootstrap_servers: str) -> dict[str, dict[str, Any]]:
    """The last action on each dead letter, by id."""
    actions: dict[str, dict[str, Any]] = {}
    for record in await read_topic(bootstrap_servers, LEDGER_TOPIC):
        try:
            action = json.loads(record.value or b"")
            actions[action["dead_letter"]] = action
        except (ValueError, KeyError, TypeError):
            continue
    return actions


def _header(headers: dict[str, bytes], name: str) -> str:
    return headers.get(name, b"").decode("utf-8", "replace")


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def dead_letter(record: ConsumerRecord[bytes, bytes], state: str) -> DeadLetter:
    raw = tuple((name, value or b"") for name, value in record.headers or ())
    headers = dict(raw)
    return DeadLetter(
        id=f"{record.topic}:{record.partition}:{record.offset}",
        dlq_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        source_topic=_header(headers, "source_topic") or record.topic.removesuffix(".dlq"),
        source_partition=_int(_header(headers, "source_partition")),
        source_offset=_int(_header(headers, "source_offset")),
        consumer_group=_header(headers, "consumer_group"),
        service=_header(headers, "service"),
        error_type=_header(headers, "error_type"),
        error_reason=_header(headers, "error_reason"),
        error=_header(headers, "error"),
        attempts=_int(_header(headers, "attempts")),
        failed_at=_header(headers, "failed_at"),
        event_type=_header(headers, "event_type"),
        state=state,
        value=record.value or b"",
        headers=raw,
    )


async def list_dead_letters(
    bootstrap_servers: str, source_topics: Iterable[str], filters: Filters, now: datetime
) -> list[DeadLetter]:
    ledger = await read_ledger(bootstrap_servers)
    letters = []
    for topic in source_topics:
        for record in await read_topic(bootstrap_servers, dlq_topic(topic)):
            letter = dead_letter(record, "dead")
            action = ledger.get(letter.id)
            if action is not None:
                letter = dead_letter(
                    record, "redriven" if action["action"] == "redrive" else "purged"
                )
            if filters.admit(letter, now):
                letters.append(letter)
    return letters


async def find(bootstrap_servers: str, letter_id: str) -> DeadLetter:
    try:
        topic, partition, offset = letter_id.rsplit(":", 2)
        wanted = (int(partition), int(offset))
    except ValueError:
        raise DeadLetterError(
            f"{letter_id!r} is not a dead letter id (<topic>.dlq:<partition>:<offset>)"
        ) from None
    if not topic.endswith(".dlq"):
        raise DeadLetterError(f"{topic} is not a dead-letter topic (<topic>.dlq)")
    ledger = await read_ledger(bootstrap_servers)
    for record in await read_topic(bootstrap_servers, topic):
        if (record.partition, record.offset) == wanted:
            action = ledger.get(letter_id)
            state = "dead" if action is None else action["action"].replace("redrive", "redriven")
            return dead_letter(record, state.replace("purge", "purged"))
    raise DeadLetterError(f"no dead letter {letter_id}")


def redrive_headers(letter: DeadLetter, by: str, at: datetime) -> list[tuple[str, bytes]]:
    """The original record's headers (DLQ and earlier redrive headers removed), and whom the
    record is for, who sent it back, when, and from where."""
    kept = [
        (name, value)
        for name, value in letter.headers
        if name not in DLQ_HEADERS and name not in REDRIVE_HEADERS
    ]
    ours = {
        REDRIVE_GROUP_HEADER: letter.consumer_group,
        "redriven_by": by,
        "redriven_at": to_rfc3339(at),
        "redrive_of": letter.id,
    }
    return kept + [(name, value.encode()) for name, value in ours.items()]


@dataclass(frozen=True)
class Action:
    action: str  # "redrive" | "purge"
    dead_letter: str
    consumer_group: str
    by: str
    at: str
    to: str | None = None  # where a redrive went: <topic>:<partition>:<offset>
    dry_run: bool = False


def check_redrivable(letter: DeadLetter) -> None:
    if letter.state != "dead":
        raise DeadLetterError(f"{letter.id} was already {letter.state}; not sending it twice")
    if not letter.consumer_group:
        raise DeadLetterError(
            f"{letter.id} names no consumer group (written before the group was recorded): "
            "redriving it would reach every group, so it is refused"
        )


async def redrive(
    sender: RecordSender,
    letters: Sequence[DeadLetter],
    *,
    by: str,
    clock: Clock,
    dry_run: bool,
) -> list[Action]:
    """Send each dead letter back to its source topic for its group; record who did it."""
    for letter in letters:
        check_redrivable(letter)
    actions = []
    for letter in letters:
        at = clock.now()
        to = None
        if not dry_run:
            metadata = await send_and_wait(
                sender,
                letter.source_topic,
                letter.value,
                key=letter.key.encode() if letter.key is not None else None,
                headers=redrive_headers(letter, by, at),
            )
            to = f"{letter.source_topic}:{metadata.partition}:{metadata.offset}"
        action = Action(
            "redrive", letter.id, letter.consumer_group, by, to_rfc3339(at), to, dry_run
        )
        if not dry_run:
            await _record(sender, action)
        actions.append(action)
    return actions


async def purge(
    sender: RecordSender,
    letters: Sequence[DeadLetter],
    *,
    by: str,
    clock: Clock,
    dry_run: bool,
) -> list[Action]:
    actions = []
    for letter in letters:
        if letter.state == "purged":
            continue
        action = Action(
            "purge", letter.id, letter.consumer_group, by, to_rfc3339(clock.now()), None, dry_run
        )
        if not dry_run:
            await _record(sender, action)
        actions.append(action)
    return actions


async def _record(sender: RecordSender, action: Action) -> None:
    await send_and_wait(
        sender,
        LEDGER_TOPIC,
        json.dumps(asdict(action)).encode(),
        key=action.dead_letter.encode(),
        headers=[],
    )
