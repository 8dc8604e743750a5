"""A bus without Kafka: the four services over their own SQLite files and one FakeClock.

The test plays the broker. `collect()` takes what the services' outboxes hold, as the relay
would (and marks it published); `deliver()` hands one message to every subscription of its
topic, in the order the test chooses and as often as it likes; `pump()` does both until the
system is quiet. `run_timers()` runs one scheduler round of a service after the test moved the
clock. Commands go straight to the services' use-case functions with the `Caller`s below.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, zip_longest
from pathlib import Path
from typing import Literal, cast

from operations.catalog import SERVICES, spec_of
from services.order import handlers as order
from services.order.handlers import OrderContext
from services.payment.domain import Outcome as PaymentOutcome
from services.payment.handlers import PaymentContext, ReceivePayment, receive_callback
from services.penalty.handlers import PenaltyContext
from services.seller_dispute.handlers import DisputeContext
from shared.contracts.events import LineItem, PaymentMethod, ShippingAddress, default_registry
from shared.contracts.policy import Policy
from shared.kernel.auth import Caller, Role
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.port import DuplicateCausation, EventStore
from shared.kernel.runtime import Runtime, TimerHandler, Wiring
from shared.kernel.settings import Settings
from shared.kernel.storage import open_document_store, open_event_store
from shared.kernel.timers import TimerScheduler

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BUYER = Caller(sub="buyer-1", role=Role.BUYER)
SELLER = Caller(sub="seller-1", role=Role.SELLER)
OPERATOR = Caller(sub="ops-1", role=Role.OPERATOR)
ITEM = LineItem(sku="TSHIRT-01", variant="red/XL", quantity=2, unit_price=89_000)
TOTAL = ITEM.quantity * ITEM.unit_price
ADDRESS = ShippingAddress(
    recipient="Sari",
    phone="+6281234567890",
    street="Jl. Melati 7",
    city="Bandung",
    province="Jawa Barat",
    postal_code="40115",
)

Interleaving = Literal["by_topic", "round_robin"]


@dataclass(frozen=True)
class Message:
    topic: str
    envelope: Envelope


class Bus:
    def __init__(self, data_dir: Path, clock: FakeClock, nodes: dict[str, tuple[Runtime, Wiring]]):
        self.data_dir = data_dir
        self.clock = clock
        self._nodes = nodes
        self.log: list[Message] = []  # everything collected, in delivery order

    @classmethod
    async def start(
        cls, data_dir: Path, clock: FakeClock, settings: Settings, policy: Policy
    ) -> Bus:
        """Wire every service as its process would, one SQLite file each."""
        nodes: dict[str, tuple[Runtime, Wiring]] = {}
        for name in SERVICES:
            url = store_url(data_dir, name)
            runtime = Runtime(
                name,
                settings,
                clock,
                await open_event_store(url),
                await open_document_store(url),
                default_registry(),
            )
            nodes[name] = (runtime, spec_of(name, policy).wire(runtime))
        return cls(data_dir, clock, nodes)

    async def close(self) -> None:
        for runtime, _ in self._nodes.values():
            await runtime.documents.close()
            await runtime.store.close()

    # --- the services -------------------------------------------------------------------

    @property
    def order(self) -> OrderContext:
        return cast(OrderContext, self._nodes["order"][1].context)

    @property
    def payment(self) -> PaymentContext:
        return cast(PaymentContext, self._nodes["payment"][1].context)

    @property
    def dispute(self) -> DisputeContext:
        return cast(DisputeContext, self._nodes["seller-dispute"][1].context)

    @property
    def penalty(self) -> PenaltyContext:
        return cast(PenaltyContext, self._nodes["penalty"][1].context)

    def store(self, service: str) -> EventStore:
        return self._nodes[service][0].store

    def stores(self) -> dict[str, EventStore]:
        return {name: runtime.store for name, (runtime, _) in self._nodes.items()}

    def tool_settings(self) -> Settings:
        """Settings for the cross-service tools (`yellowcart audit`, replay)."""
        return Settings(store_urls={name: store_url(self.data_dir, name) for name in SERVICES})

    # --- the broker ---------------------------------------------------------------------

    async def collect(self, interleave: Interleaving = "by_topic") -> list[Message]:
        """Take every service's unpublished commits, as the outbox relay would.

        Each service publishes one topic in store order; `round_robin` alternates between the
        services, `by_topic` takes one service's backlog after the other."""
        backlogs: list[list[Message]] = []
        for name in SERVICES:
            commits = await self.store(name).unpublished()
            await self.store(name).mark_published([commit.position for commit in commits])
            backlogs.append([Message(c.topic, e) for c in commits for e in c.events])
        if interleave == "round_robin":
            ordered = [m for row in zip_longest(*backlogs) for m in row if m is not None]
        else:
            ordered = list(chain.from_iterable(backlogs))
        self.log.extend(ordered)
        return ordered

    async def deliver(self, message: Message, to: Iterable[str] = SERVICES) -> None:
        """Hand `message` to every subscription of its topic in the `to` services."""
        for name in to:
            runtime, wiring = self._nodes[name]
            event = runtime.registry.decode(message.envelope)
            if event is None:
                continue
            for subscription in wiring.subscriptions:
                if message.topic in subscription.topics:
                    # The Kafka consumer counts a DuplicateCausation as done; so does the bus.
                    with contextlib.suppress(DuplicateCausation):
                        await subscription.handler(message.envelope, event)

    async def deliver_all(
        self, messages: Sequence[Message], to: Iterable[str] = SERVICES, *, twice: bool = False
    ) -> None:
        targets = tuple(to)
        for message in messages:
            for _ in range(2 if twice else 1):
                await self.deliver(message, targets)

    async def pump(self, *, twice: bool = False, interleave: Interleaving = "by_topic") -> None:
        """Publish and deliver until no service has anything left to publish."""
        while messages := await self.collect(interleave):
            await self.deliver_all(messages, twice=twice)

    async def redeliver_log(self) -> None:
        """Deliver everything ever published once more (a consumer group reset), then settle."""
        await self.deliver_all(list(self.log))
        await self.pump()

    def timer_handler(self, service: str) -> TimerHandler:
        on_timer = self._nodes[service][1].on_timer
        assert on_timer is not None, f"{service} has no timers"
        return on_timer

    async def run_timers(self, service: str, owner: str | None = None) -> int:
        """One scheduler round of `service` at the clock's time; how many timers completed."""
        owner = owner or f"{service}@harness"
        scheduler = TimerScheduler(
            self.store(service), self.clock, self.timer_handler(service), owner
        )
        return await scheduler.run_once()

    # --- what happened ------------------------------------------------------------------

    async def events(self, *event_types: str, order_id: str | None = None) -> list[Envelope]:
        """Stored events of these types (all if none), of one order or all, over the stores."""
        found: list[Envelope] = []
        for store in self.stores().values():
            async for commit in store.read_all():
                found.extend(
                    e
                    for e in commit.events
                    if (not event_types or e.event_type in event_types)
                    and (order_id is None or e.data.get("order_id") == order_id)
                )
        return found

    async def counts(self, order_id: str | None = None) -> Counter[str]:
        return Counter(envelope.event_type for envelope in await self.events(order_id=order_id))

    async def commit_positions(self) -> dict[str, list[int]]:
        return {
            name: [commit.position async for commit in store.read_all()]
            for name, store in self.stores().items()
        }

    # --- a common start -----------------------------------------------------------------

    async def place_order(self, method: PaymentMethod = PaymentMethod.BANK_TRANSFER) -> str:
        """A buyer places an order and every service has heard of it."""
        command = order.PlaceOrder(
            BUYER.sub, SELLER.sub, [ITEM], ADDRESS, method, None, at=self.clock.now()
        )
        placed = await order.place_order(self.order, command)
        await self.pump()
        return placed.order.id

    async def pay(self, order_id: str, reference: str | None = None) -> PaymentOutcome:
        """The gateway reports the full amount (reference `gw-<order>` unless given)."""
        now = self.clock.now()
        command = ReceivePayment(order_id, reference or f"gw-{order_id}", TOTAL, now, at=now)
        return await receive_callback(self.payment, command)


def store_url(data_dir: Path, service: str) -> str:
    return f"sqlite:///{data_dir / (service.replace('-', '_') + '.db')}"


@asynccontextmanager
async def running_bus(
    data_dir: Path, clock: FakeClock | None = None, policy: Policy | None = None
) -> AsyncIterator[Bus]:
    bus = await Bus.start(data_dir, clock or FakeClock(T0), Settings(), policy or Policy())
    try:
        yield bus
    finally:
        await bus.close()
