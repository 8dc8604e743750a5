"""The outbox relay: stored commits to Kafka, in per-stream order, at least once.

A command's events and its outbox flag are one atomic write in the event store; the relay
publishes the commits the broker has not acknowledged yet and marks them published only after
every event of the commit was acknowledged (acks=all). A crash between the broker's ack and
`mark_published` publishes those commits again on the next run: a consumer's commit carries
the event it handled under a unique key, so at-least-once delivery has exactly-once effects.

Only one relay per store works at a time, whatever the number of replicas: each run takes or
renews a lease in the store (`try_lease`), so two relays do not race to publish the same
commits. The lease is fenced: its marks carry the lease's epoch and are stored only while the
lease is still at that epoch (checked in the same write). A relay paused past the TTL
(SIGSTOP, a GC pause) re-asks for its lease before its next batch (its renewal is due by the
wall clock) and, refused, sends nothing; one paused between that check and its sends can send
that one batch again — Kafka has no fence a Tansu broker honours — and its marks are then
refused (`metrics.fenced`, logged): the same harmless duplicate as a crash.

Ordering: records of one key go to one partition, and the producer keeps a partition's records
in send order. When a send fails, nothing of that stream after the failed commit is marked
published in that run, so the next run sends the failed commit and everything after it again,
in order. (A later commit of the stream may already have reached the broker: consumers then
see it before and after the retried one, which their version check / dedupe absorbs.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from shared.kernel.clock import Clock
from shared.kernel.eventstore.port import Commit, EventStore, Fence, LeaseLost
from shared.kernel.messaging.consumer import RetryPolicy
from shared.kernel.messaging.kafka import RecordSender, as_sender
from shared.kernel.tracing import continued_span, trace_headers

log = logging.getLogger(__name__)


def event_records(
    commit: Commit, extra_headers: Sequence[tuple[str, bytes]] = ()
) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """(value, headers) of each event of a commit, in stream order."""
    return [
        (
            envelope.model_dump_json().encode("utf-8"),
            [
                ("event_type", envelope.event_type.encode("utf-8")),
                ("event_id", envelope.event_id.encode("utf-8")),
                ("content-type", b"application/json"),
                *extra_headers,
            ],
        )
        for envelope in commit.events
    ]


class OutboxPublishError(Exception):
    """Some commits could not be published; those that could were marked published."""

    def __init__(self, published: int, failed_streams: Sequence[str], cause: BaseException):
        super().__init__(
            f"{len(failed_streams)} stream(s) not published ({cause!r}); {published} events were"
        )
        self.published = published
        self.failed_streams = tuple(failed_streams)


@dataclass
class RelayMetrics:
    published: int = 0
    runs_without_lease: int = 0
    failures: int = 0
    fenced: int = 0  # marks refused because another replica had taken the lease over


class OutboxRelay:
    def __init__(
        self,
        store: EventStore,
        producer_or_publisher: RecordSender | AIOKafkaProducer | KafkaBroker,
        clock: Clock,
        owner: str,
        lease_name: str = "outbox",
        lease_ttl: timedelta = timedelta(seconds=3),
        batch_size: int = 500,
        backoff: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.sender = as_sender(producer_or_publisher)
        self.clock = clock
        self.owner = owner
        self.lease_name = lease_name
        self.lease_ttl = lease_ttl
        self.batch_size = batch_size
        self.backoff = backoff or RetryPolicy(first_delay_s=0.1, max_delay_s=5.0)
        self.metrics = RelayMetrics()
        self._lease_until: datetime | None = None
        self._fence: Fence | None = None
        self._work = asyncio.Event()  # set by `wake`: a commit may be waiting

    def wake(self) -> None:
        """A commit was just stored: run soon rather than at the next poll (`run`'s linger
        gathers the commits of the following moments into the same batch)."""
        self._work.set()

    async def _hold_lease(self) -> Fence | None:
        """Take or renew the lease; while a third of its time has not passed since the last
        renewal it is still ours, and the store is not asked again (a write per run saved)."""
        now = self.clock.now()
        if self._lease_until is not None and now < self._lease_until - self.lease_ttl * 2 / 3:
            return self._fence
        self._fence = await self.store.try_lease(self.lease_name, self.owner, self.lease_ttl, now)
        self._lease_until = now + self.lease_ttl if self._fence is not None else None
        return self._fence

    async def run_once(self) -> int:
        """Publish one batch of unpublished commits; return the number of events published.

        Returns 0 without reading anything while another owner holds the lease. Raises
        `OutboxPublishError` after marking what succeeded when some send failed.
        """
        fence = await self._hold_lease()
        if fence is None:
            self.metrics.runs_without_lease += 1
            return 0
        commits = await self.store.unpublished(self.batch_size)
        if not commits:
            return 0

        in_flight: list[tuple[Commit, list[asyncio.Future[Any]]]] = []
        send_error: BaseException | None = None
        for commit in commits:
            futures: list[asyncio.Future[Any]] = []
            try:
                # In the trace of the request that stored the commit, however much later.
                with continued_span(f"{commit.topic} publish", commit.trace_context):
                    for value, headers in event_records(commit, trace_headers()):
                        futures.append(
                            await self.sender.send(
                                commit.topic,
                                value,
                                key=commit.partition_key.encode("utf-8"),
                                headers=headers,
                            )
                        )
            except Exception as error:
                # Enqueueing failed (buffer full, client closed): stop sending; commits
                # already enqueued are still awaited and marked if acknowledged.
                send_error = error
                _discard(futures)
                break
            in_flight.append((commit, futures))

        await asyncio.gather(*(f for _, fs in in_flight for f in fs), return_exceptions=True)

        marked: list[int] = []
        published = 0
        failed_streams: dict[str, BaseException] = {}
        for commit, futures in in_flight:
            if commit.stream_id in failed_streams:
                continue
            failure = next((e for e in map(_failure, futures) if e is not None), None)
            if failure is not None:
                failed_streams[commit.stream_id] = failure
                continue
            marked.append(commit.position)
            published += len(commit.events)
        if marked:
            try:
                await self.store.mark_published(marked, fence)
            except LeaseLost:
                self.metrics.fenced += 1
                self._lease_until = self._fence = None
                log.warning(
                    "fence refused the outbox marks of %s: the %s lease moved past epoch %d "
                    "while it published %d commits (the new holder publishes them again)",
                    self.owner,
                    self.lease_name,
                    fence.epoch,
                    len(marked),
                )
                return 0
        self.metrics.published += published

        first_error = send_error or next(iter(failed_streams.values()), None)
        if first_error is not None:
            self.metrics.failures += 1
            raise OutboxPublishError(published, list(failed_streams), first_error) from (
                first_error
            )
        return published

    async def run(
        self, interval_s: float, stop_event: asyncio.Event, linger_s: float = 0.0
    ) -> None:
        """Relay until `stop_event` is set; back off exponentially while publishing fails.

        Between runs it waits `interval_s` (the poll that finds commits other processes
        stored), cut short by `wake`; after a wake it lingers `linger_s` so that the commits of
        a busy moment go out in one batch (a bound on runs per second, like Kafka's linger)."""
        failures = 0
        stopping = asyncio.create_task(_wake_on(stop_event, self._work))
        try:
            while not stop_event.is_set():
                wait = interval_s
                self._work.clear()  # a commit stored from here on wakes the next wait
                try:
                    published = await self.run_once()
                except Exception:
                    # Nothing is lost: unpublished commits stay in the store for the next run.
                    failures += 1
                    wait = self.backoff.delay(failures)
                    log.exception("outbox relay run failed (%d in a row)", failures)
                else:
                    failures = 0
                    if published >= self.batch_size:
                        wait = 0.0  # more may be waiting: go on at once
                if wait <= 0:
                    continue
                if failures:  # a commit stored meanwhile does not cut a back-off short
                    await _wait(stop_event, wait)
                elif await _wait(self._work, wait) and linger_s > 0 and not stop_event.is_set():
                    await _wait(stop_event, linger_s)
        finally:
            stopping.cancel()
            self._lease_until = self._fence = None
            try:
                await self.store.release_lease(self.lease_name, self.owner)
            except Exception:
                log.warning("could not release the outbox lease", exc_info=True)


async def republish(
    store: EventStore,
    producer: RecordSender | AIOKafkaProducer | KafkaBroker,
    after_position: int = 0,
    batch_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Send every stored commit after `after_position` again, in store order.

    For `yellowcart republish` after the broker lost its data. Published flags are not
    touched; consumers deduplicate what they had already handled. Returns the events sent;
    raises on the first failed batch (rerun it: republishing is idempotent downstream).
    `on_batch(n)` is told of every `n` events acknowledged (a tool's progress).
    """
    sender = as_sender(producer)
    sent = 0
    pending: list[asyncio.Future[Any]] = []
    async for commit in store.read_all(after_position, batch_size):
        for value, headers in event_records(commit):
            pending.append(
                await sender.send(
                    commit.topic,
                    value,
                    key=commit.partition_key.encode("utf-8"),
                    headers=headers,
                )
            )
        if len(pending) >= batch_size:
            acknowledged = await _await_all(pending)
            sent += acknowledged
            pending = []
            if on_batch is not None:
                on_batch(acknowledged)
    acknowledged = await _await_all(pending)
    if on_batch is not None:
        on_batch(acknowledged)
    return sent + acknowledged


async def _await_all(futures: list[asyncio.Future[Any]]) -> int:
    await asyncio.gather(*futures)
    return len(futures)


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return asyncio.CancelledError("send cancelled")
    return future.exception()


def _discard(futures: list[asyncio.Future[Any]]) -> None:
    """Observe futures whose outcome no longer matters, so asyncio does not warn."""
    for future in futures:
        future.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` have passed; whether it was set."""
    if seconds <= 0:
        return event.is_set()
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def _wake_on(stop_event: asyncio.Event, work: asyncio.Event) -> None:
    """Let a stop cut the relay's wait short: it waits on `work` alone."""
    await stop_event.wait()
    work.set()
