"""Consume domain events at least once, with bounded retries and a dead-letter topic.

`subscribe_events(broker, topic, group_id=..., handler=..., registry=...)` registers a
FastStream batch subscriber that calls `async def handler(envelope, event) -> None` for every
event of a type the registry knows (or a batch handler with a whole batch's events), and
commits offsets only after the handler returned, so a crash never loses an event.

What FastStream 0.7.8 gives and what this module adds (read in its source):

- `AckPolicy.MANUAL` turns aiokafka's auto-commit off and leaves committing to us. The other
  policies do not fit: `ACK_FIRST` (the default) commits before the handler runs (at most
  once); `ACK`/`REJECT_ON_ERROR` commit after an error too; `NACK_ON_ERROR` seeks back at once
  and redelivers in a hot loop, without a bound or a backoff.
- A batch subscriber (`batch=True`) reads with `getmany()` whatever has arrived (up to
  `max_records`) and awaits the handler before reading again, so one consumer handles one
  batch at a time, each partition's records in order. Kafka offsets are cumulative:
  committing a later offset of a partition skips every earlier one for good. We therefore
  never return from a batch before every record of it is resolved (handled, tolerated as
  unknown, or dead-lettered): retries happen in process, with exponential backoff, while the
  partition waits. Then each partition is committed once, at its last record + 1 — one
  broker round trip per batch rather than per record, which was most of a consumer's time
  under load.
- FastStream swallows (logs) any exception raised by a handler, parser or decoder and moves
  on to the next message, whose commit would then skip the failed one. So the FastStream
  handler here never raises: decoding is ours (a pass-through decoder; headers that are not
  UTF-8 or are null would make FastStream's own parser raise, so ours repairs them), every
  failure ends in a retry or in the DLQ, and a DLQ publish that fails is retried with
  backoff until it succeeds, never skipped.
- `msg.ack()` commits every consumed position of the consumer; we commit each partition of
  the batch at exactly its last record's `offset + 1` instead, which does not depend on how
  far the client has read.
- On shutdown `broker.stop()` lets a running handler finish within `graceful_timeout`, then
  cancels it. The records of the batch resolved before that are committed; the cancelled one
  and those after it are not (aiokafka does not commit on close with auto-commit off), so
  they are redelivered.

Idempotence of effects is the handler's job: it writes its commit with
`causation_id = envelope.event_id` under a unique key, so a redelivered event (after a crash,
a rebalance, a commit that failed, or a retry after a write whose outcome was unknown) creates
nothing new. A handler may simply let `DuplicateCausation` escape: it is counted as done.
The DLQ is at least once too: a publish that timed out may have landed, and is sent again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from shared.kernel.clock import Clock, SystemClock, to_rfc3339
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import DuplicateCausation, StoreUnavailable
from shared.kernel.logs import bound_context
from shared.kernel.messaging.kafka import Headers, RecordSender, as_sender, send_and_wait
from shared.kernel.metrics import EVENTS_CONSUMED, HANDLER_DURATION
from shared.kernel.tracing import context_from_headers, record_spans, span, tracing_enabled

log = logging.getLogger(__name__)

EventHandler = Callable[[Envelope, DomainEvent], Awaitable[None]]
BatchHandler = Callable[[Sequence[tuple[Envelope, DomainEvent]]], Awaitable[None]]
Records = Sequence[ConsumerRecord[Any, Any]]
CommitOffsets = Callable[[dict[TopicPartition, int]], Awaitable[None]]
DLQ_SUFFIX = ".dlq"
MAX_BATCH_RECORDS = 500
BATCH_WAIT_MS = 50  # how long an idle consumer waits for records before asking again
MAX_ERROR_HEADER_CHARS = 2000
# A record redriven from a dead-letter topic for one consumer group carries that group's name
# here; every other group skips it (it handled the original already). See `EventConsumer`.
REDRIVE_GROUP_HEADER = "redrive_group"


def dlq_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `attempts` calls, waiting first, first*multiplier, ... up to max."""

    attempts: int = 5
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("delays must satisfy 0 <= first_delay_s <= max_delay_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th consecutive failure (1-based)."""
        if failures < 1:
            return 0.0
        exponent = min(failures - 1, 64)  # caps the float growth of an endless DLQ retry
        return float(min(self.first_delay_s * self.multiplier**exponent, self.max_delay_s))

    def schedule(self) -> list[float]:
        """The waits between the handler attempts of one message."""
        return [self.delay(failure) for failure in range(1, self.attempts)]


@dataclass
class ConsumerMetrics:
    """Plain counters, read by a /metrics route."""

    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    unknown_types: int = 0
    dlq_publish_failures: int = 0
    commit_failures: int = 0
    redrives_skipped: int = 0  # redriven records meant for another group
    store_unavailable: int = 0  # handler attempts that found the store down (never DLQ'd)


def dead_letter_headers(
    *,
    error: BaseException,
    reason: str,
    attempts: int,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    failed_at: datetime,
    original_headers: Headers = (),
    consumer_group: str = "",
    service: str = "",
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: why it failed, where it came from, who rejected it (the
    consumer group and its service: every group that fails a record writes its own copy, so
    one poison message can appear once per group), and the original headers.

    Original headers are kept unless they collide with a DLQ header name.
    """
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_HEADER_CHARS]
    ours: dict[str, str] = {
        "error": message,
        "error_type": type(error).__name__,
        "error_reason": reason,
        "attempts": str(attempts),
        "source_topic": source_topic,
        "source_partition": str(source_partition),
        "source_offset": str(source_offset),
        "failed_at": to_rfc3339(failed_at),
        "consumer_group": consumer_group,
        "service": service,
    }
    kept = [(name, value) for name, value in original_headers if name not in ours]
    return [*((name, value.encode("utf-8")) for name, value in ours.items()), *kept]


class EventConsumer:
    """Decodes, handles, retries and dead-letters one record at a time.

    Independent of FastStream (`process` takes an aiokafka record and a commit callback), so
    the same logic serves the subscriber below and any plain aiokafka loop.
    """

    def __init__(
        self,
        *,
        topic: str,
        handler: EventHandler,
        registry: EventRegistry,
        dead_letters: RecordSender,
        retry: RetryPolicy | None = None,
        dlq_retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        batch_handler: BatchHandler | None = None,
        group_id: str = "",
        service: str = "",
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.service = service
        self.committed: dict[TopicPartition, int] = {}  # the offsets this consumer committed
        self.kafka_client: Callable[[], AIOKafkaConsumer | None] = lambda: None
        self._durations: dict[tuple[str, str, str], Any] = {}  # metric children by labels
        self._consumed: dict[tuple[str, str], Any] = {}
        self.handler = handler
        self.batch_handler = batch_handler
        self.registry = registry
        self.dead_letters = dead_letters
        self.retry = retry or RetryPolicy()
        self.dlq_retry = dlq_retry or RetryPolicy(first_delay_s=0.1, max_delay_s=5.0)
        self.clock: Clock = clock or SystemClock()
        self.metrics = ConsumerMetrics()
        self.store_retry = RetryPolicy(first_delay_s=0.1, max_delay_s=2.0)
        self.waiting_for_store = False  # paused on a record because the store is unavailable
        self._sleep = sleep

    async def process(
        self, record: ConsumerRecord[Any, Any], commit: Callable[[], Awaitable[None]]
    ) -> None:
        """Resolve one record, then commit it. Cancellation leaves it uncommitted."""

        async def commit_it(offsets: dict[TopicPartition, int]) -> None:
            await commit()

        await self.process_batch([record], commit_it)

    async def process_batch(self, records: Records, commit: CommitOffsets) -> None:
        """Resolve a batch of records (in order per partition), then commit each partition once.

        Without a batch handler every record is resolved in turn, as `process` does; when the
        batch is cancelled (shutdown), the records resolved so far are committed and the rest
        is redelivered. With a batch handler (a projection folding many events into few
        documents), the batch's events go to it at once after poison messages were
        dead-lettered; if it fails, every event is handled alone with the usual retries, so
        one bad event cannot hold the others back. Nothing of the batch is committed before
        all of it is resolved: at least once, as for single records.
        """
        resolved: dict[TopicPartition, int] = {}
        if self.batch_handler is not None:
            await self._resolve_together(records, self.batch_handler)
        else:
            try:
                for record in records:
                    await self._resolve(record)
                    resolved[TopicPartition(record.topic, record.partition)] = record.offset + 1
            except asyncio.CancelledError:
                if resolved:
                    await asyncio.shield(self._commit(commit, resolved))
                raise
        await self._commit(commit, {_partition(r): r.offset + 1 for r in records})

    async def _resolve_together(self, records: Records, batch_handler: BatchHandler) -> None:
        decoded = [(record, await self._decode(record)) for record in records]
        events = [(record, *pair) for record, pair in decoded if pair is not None]
        if not events:
            return
        started = time.perf_counter()
        started_ns = time.time_ns()
        try:
            await batch_handler([(envelope, event) for _, envelope, event in events])
        except Exception:
            self._observe(records[0].topic, "batch", "retried", started)
            log.warning("batch handler failed; handling its %d events one by one", len(events))
            for record, envelope, event in events:
                await self._handle(record, envelope, event)
        else:
            self._observe(records[0].topic, "batch", "processed", started)
            self.metrics.processed += len(events)
            if tracing_enabled():  # the batch's work, shown in each event's trace
                parents = [context_from_headers(record.headers) for record, _, _ in events]
                record_spans(
                    f"projection update {self.group_id}", parents, started_ns, time.time_ns()
                )

    def _observe(self, topic: str, event_type: str, outcome: str, started: float) -> None:
        key = (topic, event_type, outcome)
        child = self._durations.get(key)
        if child is None:  # `labels()` costs microseconds: each series is looked up once
            child = self._durations[key] = HANDLER_DURATION.labels(
                topic, self.group_id, event_type, outcome
            )
        child.observe(time.perf_counter() - started)

    def _count(self, topic: str, event_type: str) -> None:
        key = (topic, event_type)
        child = self._consumed.get(key)
        if child is None:
            child = self._consumed[key] = EVENTS_CONSUMED.labels(topic, self.group_id, event_type)
        child.inc()

    async def _commit(self, commit: CommitOffsets, offsets: dict[TopicPartition, int]) -> None:
        try:
            await commit(offsets)
            self.committed.update(offsets)
        except Exception:
            # The partition was probably reassigned: its new owner reads from the last
            # committed offset, so these records are handled again there (idempotently).
            self.metrics.commit_failures += 1
            log.warning("offset commit failed for %s; redelivered", offsets, exc_info=True)

    async def _decode(
        self, record: ConsumerRecord[Any, Any]
    ) -> tuple[Envelope, DomainEvent] | None:
        """The record's envelope and event, or None once it was dead-lettered or skipped."""
        if self._redriven_for_another_group(record):
            self.metrics.redrives_skipped += 1
            return None
        try:
            envelope = Envelope.model_validate_json(record.value or b"")
        except ValidationError as error:
            await self._dead_letter(record, error, reason="invalid_envelope", attempts=0)
            return None
        try:
            event = self.registry.decode(envelope)
        except (ValidationError, ValueError) as error:
            await self._dead_letter(record, error, reason="invalid_payload", attempts=0)
            return None
        if event is None:
            self.metrics.unknown_types += 1
            return None
        self._count(record.topic, envelope.event_type)
        return envelope, event

    def _redriven_for_another_group(self, record: ConsumerRecord[Any, Any]) -> bool:
        """A record redriven from a DLQ is for the one group that failed it; the others
        handled the original and must not see it twice."""
        for name, value in record.headers or ():
            if name == REDRIVE_GROUP_HEADER:
                return (value or b"").decode("utf-8", "replace") != self.group_id
        return False

    async def _resolve(self, record: ConsumerRecord[Any, Any]) -> None:
        decoded = await self._decode(record)
        if decoded is not None:
            await self._handle(record, *decoded)

    async def _handle(
        self, record: ConsumerRecord[Any, Any], envelope: Envelope, event: DomainEvent
    ) -> None:
        with bound_context(
            correlation_id=envelope.correlation_id,
            causation_id=envelope.causation_id,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
        ):
            if not tracing_enabled():
                await self._handle_in_context(record, envelope, event)
                return
            with span(
                f"{record.topic} process",
                parent=context_from_headers(record.headers),
                kind=SpanKind.CONSUMER,
                attributes={"group": self.group_id, "event_type": envelope.event_type},
            ):
                await self._handle_in_context(record, envelope, event)

    async def _handle_in_context(
        self, record: ConsumerRecord[Any, Any], envelope: Envelope, event: DomainEvent
    ) -> None:
        attempt, store_failures = 0, 0
        while attempt < self.retry.attempts:
            started = time.perf_counter()
            try:
                await self.handler(envelope, event)
            except DuplicateCausation:
                self._observe(record.topic, envelope.event_type, "duplicate", started)
                self.metrics.duplicates += 1
                self.waiting_for_store = False
                return
            except StoreUnavailable:
                # The event is valid; our store is not: pause on this record and try it again
                # until the store answers. It is never dead-lettered for this.
                self._observe(record.topic, envelope.event_type, "store_unavailable", started)
                store_failures += 1
                self.metrics.store_unavailable += 1
                self.waiting_for_store = True
                log.warning(
                    "store unavailable handling %s %s (%d times); pausing on this record",
                    envelope.event_type,
                    envelope.event_id,
                    store_failures,
                    exc_info=store_failures == 1,
                )
                await self._sleep(self.store_retry.delay(store_failures))
                continue
            except Exception as error:
                attempt += 1
                last = attempt == self.retry.attempts
                outcome = "dead_lettered" if last else "retried"
                self._observe(record.topic, envelope.event_type, outcome, started)
                if last:
                    await self._dead_letter(
                        record, error, reason="handler_failed", attempts=attempt
                    )
                    return
                self.metrics.retried += 1
                log.warning(
                    "handler failed on %s %s (attempt %d/%d), retrying",
                    envelope.event_type,
                    envelope.event_id,
                    attempt,
                    self.retry.attempts,
                    exc_info=True,
                )
                await self._sleep(self.retry.delay(attempt))
            else:
                self._observe(record.topic, envelope.event_type, "processed", started)
                self.metrics.processed += 1
                self.waiting_for_store = False
                log.debug("handled %s in %s", envelope.event_type, self.group_id)
                return

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], error: Exception, *, reason: str, attempts: int
    ) -> None:
        """Publish to `<topic>.dlq` and wait for the ack; retry until it succeeds.

        Returning without a published dead letter would let the commit skip the record,
        so a DLQ outage stalls this consumer (visible in `dlq_publish_failures`) instead.
        """
        headers = dead_letter_headers(
            error=error,
            reason=reason,
            attempts=attempts,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            failed_at=self.clock.now(),
            original_headers=[(name, value or b"") for name, value in record.headers or ()],
            consumer_group=self.group_id,
            service=self.service,
        )
        log.error(
            "dead-lettering %s[%s]@%s (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            "".join(traceback.format_exception_only(error)).strip()[:500],
        )
        failures = 0
        while True:
            try:
                await send_and_wait(
                    self.dead_letters,
                    dlq_topic(record.topic),
                    record.value or b"",
                    key=record.key,
                    headers=headers,
                )
            except Exception:
                failures += 1
                self.metrics.dlq_publish_failures += 1
                log.exception("DLQ publish failed (%d times); retrying", failures)
                await self._sleep(self.dlq_retry.delay(failures))
            else:
                self.metrics.dead_lettered += 1
                return


def _repaired_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    """FastStream's parser decodes every header as UTF-8 and fails on null or binary ones."""
    headers = record.headers or ()
    if all(isinstance(value, bytes) and _is_utf8(value) for _, value in headers):
        return record
    repaired = tuple(
        (name, (value or b"").decode("utf-8", errors="replace").encode("utf-8"))
        for name, value in headers
    )
    return dataclasses.replace(record, headers=repaired)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _partition(record: ConsumerRecord[Any, Any]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


async def _tolerant_parser(
    records: tuple[ConsumerRecord[Any, Any], ...], original: Callable[[Any], Awaitable[Any]]
) -> Any:
    return await original(tuple(_repaired_headers(record) for record in records))


async def _raw_decoder(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """Hand the body over untouched: decoding and its failures are `EventConsumer`'s."""
    return message.body


def subscribe_events(
    broker: KafkaBroker,
    topic: str | Sequence[str],
    *,
    group_id: str,
    handler: EventHandler,
    registry: EventRegistry,
    retry: RetryPolicy | None = None,
    dlq_retry: RetryPolicy | None = None,
    clock: Clock | None = None,
    dead_letters: RecordSender | None = None,
    partitions: int = 4,
    auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest",
    batch_handler: BatchHandler | None = None,
    max_records: int = MAX_BATCH_RECORDS,
    service: str | None = None,
    **subscriber_options: Any,
) -> EventConsumer:
    """Register `handler` for the events of `topic` (one or several) in consumer group `group_id`.

    Several topics share one consumer (one group join); each record still dead-letters to its
    own `<topic>.dlq`.

    Records are read in batches (`getmany`, at most `max_records`): whatever has arrived is
    handled together and each partition's offset committed once per batch, instead of one
    broker round trip per record; `batch_handler` (optional) takes a batch's events at once.

    Call before `broker.start()`. `partitions` is used only if FastStream has to create the
    topic (its own default would be a single partition). `subscriber_options` go to
    `broker.subscriber` (e.g. `session_timeout_ms`). `service` names the service in
    dead-letter headers; by default the group's prefix (groups are `<service>.<purpose>`).
    Returns the consumer, whose `metrics` a /metrics route can read.
    """
    topics = [topic] if isinstance(topic, str) else list(topic)
    consumer = EventConsumer(
        topic=",".join(topics),
        handler=handler,
        registry=registry,
        dead_letters=dead_letters or as_sender(broker),
        retry=retry,
        dlq_retry=dlq_retry,
        clock=clock,
        batch_handler=batch_handler,
        group_id=group_id,
        service=service if service is not None else group_id.split(".", 1)[0],
    )
    subscriber = broker.subscriber(
        *(Topic(name, num_partitions=partitions) for name in topics),
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset=auto_offset_reset,
        parser=_tolerant_parser,
        decoder=_raw_decoder,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=BATCH_WAIT_MS,
        **subscriber_options,
    )

    async def on_records(message: KafkaMessage) -> None:
        records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message
        client = message.consumer

        async def commit(offsets: dict[TopicPartition, int]) -> None:
            if isinstance(client, AIOKafkaConsumer):
                await client.commit(offsets)
            else:
                await message.ack()

        await consumer.process_batch(records, commit)

    def kafka_client() -> AIOKafkaConsumer | None:
        client = getattr(subscriber, "consumer", None)
        return client if isinstance(client, AIOKafkaConsumer) else None

    subscriber(on_records)
    consumer.kafka_client = kafka_client
    return consumer


async def consumer_lag(consumer: EventConsumer) -> dict[TopicPartition, int]:
    """Records after the group's committed offset, per partition assigned to this consumer.

    Asks the broker for the partitions' end offsets (one request); committed offsets are the
    ones this consumer committed, or the group's (asked once) for a partition it has not
    committed yet. Empty before the consumer joined its group."""
    client = consumer.kafka_client()
    assigned = list(client.assignment()) if client is not None else []
    if client is None or not assigned:
        return {}
    ends = await client.end_offsets(assigned)
    lag: dict[TopicPartition, int] = {}
    for partition in assigned:
        committed = consumer.committed.get(partition)
        if committed is None:
            committed = await client.committed(partition) or 0
            consumer.committed.setdefault(partition, committed)
        lag[partition] = max(0, ends[partition] - committed)
    return lag
