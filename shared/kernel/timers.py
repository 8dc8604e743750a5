"""Durable timers fire at least once, from one replica at a time.

Timers are stored with the commit that scheduled them. A `TimerScheduler` in each replica
polls; only the holder of the store's lease fires, so replicas do not race each other in the
normal case. Delivery stays at-least-once (a replica can crash after firing and before
completing), so the effect must be idempotent: the caller's `fire` commits with
`causation_id = timer_id`, and a DuplicateCausation from it means the effect is already
stored, so the timer is completed.

Fencing: each round fires under the lease's fence (its epoch), handed to `fire` in
`DueTimer.fence`; the effect's commit and the completion are stored only while the lease is
still at that epoch, checked in the same write. A replica paused past the lease's TTL (SIGSTOP,
a long GC pause) that wakes mid-round is refused with LeaseLost: it counts it
(`metrics.fenced`), logs it and ends the round; the new holder fires the timer.
Time comes only from the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.kernel.clock import Clock
from shared.kernel.eventstore.port import (
    DueTimer,
    DuplicateCausation,
    EventStore,
    EventStoreError,
    LeaseLost,
)

log = logging.getLogger(__name__)

FireTimer = Callable[[DueTimer], Awaitable[None]]


@dataclass
class TimerMetrics:
    fired: int = 0
    already_handled: int = 0
    failed: int = 0
    fenced: int = 0  # attempts refused because another replica had taken the lease over


class TimerScheduler:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        fire: FireTimer,
        owner: str,
        lease_name: str = "timers",
        lease_ttl: timedelta = timedelta(seconds=3),
        batch_size: int = 100,
        first_retry: timedelta = timedelta(seconds=1),
        max_retry: timedelta = timedelta(minutes=5),
    ) -> None:
        """`lease_ttl` should exceed the time one round takes, or a second replica may take
        the lease mid-round and fire the same timers (harmless, but wasted work). A timer whose
        handler fails is retried after `first_retry`, doubling up to `max_retry`."""
        self._store = store
        self._clock = clock
        self._fire = fire
        self._owner = owner
        self._lease_name = lease_name
        self._lease_ttl = lease_ttl
        self._batch_size = batch_size
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._failing: dict[str, tuple[int, datetime]] = {}  # timer id → (failures, retry at)
        self.metrics = TimerMetrics()

    async def run_once(self) -> int:
        """Fire the timers due now, if this replica holds the lease; how many were completed."""
        now = self._clock.now()
        fence = await self._store.try_lease(self._lease_name, self._owner, self._lease_ttl, now)
        if fence is None:
            return 0
        completed = 0
        for timer in await self._store.due_timers(now, limit=self._batch_size):
            failures, retry_at = self._failing.get(timer.timer_id, (0, now))
            if retry_at > now:
                continue
            try:
                await self._fire(replace(timer, fence=fence))
                self.metrics.fired += 1
            except LeaseLost:
                self._refused(timer, fence.epoch)
                return completed
            except DuplicateCausation:
                self.metrics.already_handled += 1
                log.info("timer %s (%s) was already handled", timer.timer_id, timer.name)
            except Exception:
                self.metrics.failed += 1
                delay = min(self._max_retry, self._first_retry * 2**failures)
                self._failing[timer.timer_id] = (failures + 1, now + delay)
                log.exception(
                    "timer %s (%s) of %s failed (%d times); it stays due, retried in %s",
                    timer.timer_id,
                    timer.name,
                    timer.stream_id,
                    failures + 1,
                    delay,
                )
                continue
            self._failing.pop(timer.timer_id, None)
            try:
                await self._store.complete_timer(timer.timer_id, fence)
            except LeaseLost:
                self._refused(timer, fence.epoch)
                return completed
            completed += 1
        return completed

    def _refused(self, timer: DueTimer, epoch: int) -> None:
        self.metrics.fenced += 1
        log.warning(
            "fence refused timer %s (%s) of %s: %s lost the %s lease at epoch %d to another "
            "replica; the round ends and the new holder fires it",
            timer.timer_id,
            timer.name,
            timer.stream_id,
            self._owner,
            self._lease_name,
            epoch,
        )

    async def run(self, interval_s: float, stop_event: asyncio.Event) -> None:
        """Poll every `interval_s` until `stop_event` is set, then give the lease back."""
        try:
            while not stop_event.is_set():
                try:
                    await self.run_once()
                except EventStoreError:
                    log.exception("timer round failed; retrying in %.1f s", interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), interval_s)
        finally:
            with contextlib.suppress(EventStoreError):
                await self._store.release_lease(self._lease_name, self._owner)
