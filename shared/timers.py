"""Durable timers fire at least once, from one replica at a time (DESIGN §4.6).

Timers are stored with the commit that scheduled them. A `TimerScheduler` in each replica
polls; only the holder of the store's lease fires, so replicas do not race each other in the
normal case. Delivery stays at-least-once (a replica can crash after firing and before
completing, or lose its lease mid-round), so the effect must be idempotent: the caller's
`fire` commits with `causation_id = timer_id`, and a DuplicateCausation from it means the
effect is already stored, so the timer is completed. Time comes only from the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from shared.clock import Clock
from shared.eventstore.port import DueTimer, DuplicateCausation, EventStore, EventStoreError

log = logging.getLogger(__name__)

FireTimer = Callable[[DueTimer], Awaitable[None]]


@dataclass
class TimerMetrics:
    fired: int = 0
    already_handled: int = 0
    failed: int = 0


class TimerScheduler:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        fire: FireTimer,
        owner: str,
        lease_name: str = "timers",
        lease_ttl: timedelta = timedelta(seconds=30),
        batch_size: int = 100,
    ) -> None:
        """`lease_ttl` should exceed the time one round takes, or a second replica may take
        the lease mid-round and fire the same timers (harmless, but wasted work)."""
        self._store = store
        self._clock = clock
        self._fire = fire
        self._owner = owner
        self._lease_name = lease_name
        self._lease_ttl = lease_ttl
        self._batch_size = batch_size
        self.metrics = TimerMetrics()

    async def run_once(self) -> int:
        """Fire the timers due now, if this replica holds the lease; how many were completed."""
        now = self._clock.now()
        if not await self._store.try_lease(self._lease_name, self._owner, self._lease_ttl, now):
            return 0
        completed = 0
        for timer in await self._store.due_timers(now, limit=self._batch_size):
            try:
                await self._fire(timer)
                self.metrics.fired += 1
            except DuplicateCausation:
                self.metrics.already_handled += 1
                log.info("timer %s (%s) was already handled", timer.timer_id, timer.name)
            except Exception:
                self.metrics.failed += 1
                log.exception(
                    "timer %s (%s) of %s failed; it stays due and is retried next round",
                    timer.timer_id,
                    timer.name,
                    timer.stream_id,
                )
                continue
            await self._store.complete_timer(timer.timer_id)
            completed += 1
        return completed

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
