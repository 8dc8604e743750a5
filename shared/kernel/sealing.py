"""Services seal checkpoints of their own store, periodically, from one replica at a time.

A `CheckpointSealer` reads its store's new commits since its last round (`read_all` after the
last position it saw; the first round reads everything), checks each stream's hash chain as it
goes (`ChainVerifier`, which keeps one head per stream), and when something changed signs the
heads (`shared.kernel.checkpoints.seal`) and publishes them to the checkpoint topic, outside
the store: a rewrite of the store, however well rehashed, no longer matches what left it.

- **One replica seals.** A round runs only while this replica holds the store's `checkpoints`
  lease (the same fenced lease the outbox relay and the timers take, under its own name); its
  TTL spans two intervals, so the holder keeps it from round to round and the others wait.
- **A broken chain is never sealed.** The sealer refuses (logs it, counts
  `refused_broken_chain`) and keeps refusing until a restart reads the store again.
- **Parts.** A store's heads are signed in parts of at most `PART_STREAMS` streams, each part a
  complete checkpoint document of its streams (so a record stays far under Kafka's 1 MB
  message limit); the event says `part` of `parts` of one `seal_id`.
- **In the background.** A round's reading, checking and signing are CPU work on the service's
  event loop: all at once, a minute of a busy store (0.5 s for 36,000 commits) stalled every
  request and consumer of the process, in every service at the same moment. A round therefore
  works in small steps and rests after each for long enough to keep within `pace` of a core
  (a tenth by default): the same work, spread over a few seconds.
- **At least once.** A part is sent and its acknowledgement awaited; when the broker refuses, the
  round counts a failure and the next round seals again (newer heads cover everything the lost
  ones did). Nothing is written to the store, so nothing needs the outbox.

The event itself is the product's (`event_of` builds it from the document), so the kernel knows
no contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.kernel.checkpoints import seal
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.chain import ChainVerifier, StreamHead
from shared.kernel.eventstore.port import EventStore, EventStoreError
from shared.kernel.messaging.kafka import RecordSender, send_and_wait

log = logging.getLogger(__name__)

PART_STREAMS = 2_000  # about 130 bytes a head: a part stays near 260 kB
READ_STEP = 200  # commits read and checked between rests (~3 ms of work)
PACE = 0.1  # the share of a core a round may take while it works
_work_clock = time.perf_counter  # module names, so that a test can watch the rests
_sleep = asyncio.sleep
CheckpointEvent = Callable[[Mapping[str, Any]], DomainEvent]
"""Builds the published event from {service, seal_id, part, parts, checkpoint (document)}."""


@dataclass
class SealerMetrics:
    sealed: int = 0  # checkpoints published (all their parts acknowledged)
    runs_without_lease: int = 0
    unchanged: int = 0  # rounds with nothing new to seal
    refused_broken_chain: int = 0
    failures: int = 0  # rounds whose publication failed (sealed again next round)


@dataclass(frozen=True)
class Sealed:
    seal_id: str
    streams: int
    parts: int
    position: int  # the last store position the checkpoint covers


class CheckpointSealer:
    def __init__(
        self,
        store: EventStore,
        sender: RecordSender,
        clock: Clock,
        key: Ed25519PrivateKey,
        *,
        service: str,
        owner: str,
        event_of: CheckpointEvent,
        interval: timedelta,
        lease_name: str = "checkpoints",
        part_streams: int = PART_STREAMS,
        read_batch: int = READ_STEP,
        pace: float = PACE,
    ) -> None:
        if not 0 < pace <= 1:
            raise ValueError(f"pace is a share of a core, 0 < pace <= 1, not {pace}")
        self._store = store
        self._sender = sender
        self._clock = clock
        self._key = key
        self.service = service
        self._owner = owner
        self._event_of = event_of
        self._lease_name = lease_name
        self._lease_ttl = interval * 2 + timedelta(seconds=5)
        self._part_streams = part_streams
        self._read_batch = read_batch
        self._rest_per_work = 1 / pace - 1
        self._verifier = ChainVerifier()
        self._read_to = 0  # the last store position read
        self._sealed_to: int | None = None  # the position the last published checkpoint covers
        self._broken: str | None = None
        self.metrics = SealerMetrics()

    async def _rest(self, began: float) -> None:
        """Rest for long enough that the work since `began` stays within the pace."""
        if self._rest_per_work:
            await _sleep((_work_clock() - began) * self._rest_per_work)

    async def _read_new(self) -> None:
        began, step = _work_clock(), 0
        async for commit in self._store.read_all(self._read_to, self._read_batch):
            for chain_break in self._verifier.check(commit):
                if self._broken is None:
                    self._broken = (
                        f"{chain_break.stream_id} version {chain_break.first_version} "
                        f"(position {chain_break.position}): {chain_break.detail}"
                    )
            self._read_to = max(self._read_to, commit.position)
            step += 1
            if step == self._read_batch:
                await self._rest(began)
                began, step = _work_clock(), 0

    async def run_once(self) -> Sealed | None:
        """Seal and publish the store's heads if this replica holds the lease and something
        changed since the last checkpoint it published; what it published, else None."""
        now = self._clock.now()
        fence = await self._store.try_lease(self._lease_name, self._owner, self._lease_ttl, now)
        if fence is None:
            self.metrics.runs_without_lease += 1
            return None
        await self._read_new()
        if self._broken is not None:
            self.metrics.refused_broken_chain += 1
            log.error(
                "%s: not sealing a checkpoint: the hash chain of its store is broken at %s",
                self.service,
                self._broken,
            )
            return None
        heads = self._verifier.heads
        if not heads or self._sealed_to == self._read_to:
            self.metrics.unchanged += 1
            return None
        streams = sorted(heads)
        chunks = [
            streams[start : start + self._part_streams]
            for start in range(0, len(streams), self._part_streams)
        ]
        seal_id = uuid4().hex
        try:
            for part, chunk in enumerate(chunks, start=1):
                began = _work_clock()
                await self._publish(seal_id, part, len(chunks), {s: heads[s] for s in chunk})
                await self._rest(began)
        except Exception:
            self.metrics.failures += 1
            log.exception(
                "%s: publishing checkpoint %s failed; next round seals again", self.service, seal_id
            )
            return None
        self._sealed_to = self._read_to
        self.metrics.sealed += 1
        log.info(
            "%s sealed checkpoint %s: %d streams up to position %d, %d part(s)",
            self.service,
            seal_id,
            len(streams),
            self._read_to,
            len(chunks),
        )
        return Sealed(seal_id, len(streams), len(chunks), self._read_to)

    async def _publish(
        self, seal_id: str, part: int, parts: int, heads: Mapping[str, StreamHead]
    ) -> None:
        now = self._clock.now()
        document = seal({self.service: heads}, now, self._key)
        event = self._event_of(
            {
                "service": self.service,
                "seal_id": seal_id,
                "part": part,
                "parts": parts,
                "checkpoint": document,
            }
        )
        envelope = Envelope.of(
            event,
            stream_id=f"checkpoint-{self.service}-{seal_id}",
            stream_version=part,
            occurred_at=now,
            producer=self.service,
            correlation_id=seal_id,
            causation_id=None,
        )
        await send_and_wait(
            self._sender,
            event.topic,
            envelope.model_dump_json().encode("utf-8"),
            key=event.partition_key().encode("utf-8"),
            headers=[
                ("event_type", envelope.event_type.encode("utf-8")),
                ("event_id", envelope.event_id.encode("utf-8")),
                ("content-type", b"application/json"),
            ],
        )

    async def run(self, interval_s: float, stop_event: asyncio.Event) -> None:
        """A round every `interval_s` (the first after one interval) until `stop_event` is set,
        then give the lease back."""
        try:
            while not stop_event.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), interval_s)
                if stop_event.is_set():
                    break
                try:
                    await self.run_once()
                except Exception:  # a store or broker away: the next round tries again
                    log.exception("checkpoint round failed; retrying in %.1f s", interval_s)
        finally:
            with contextlib.suppress(EventStoreError):
                await self._store.release_lease(self._lease_name, self._owner)
