"""How many dead letters wait, per dead-letter topic and consumer group: a scrape-time gauge.

A dead letter waits from the moment a consumer group writes it to `<topic>.dlq` until the
workbench redrives or purges it, which it records in the ledger topic `LEDGER_TOPIC` (JSON with
the dead letter's id `<dlq topic>:<partition>:<offset>`). Kafka keeps no count of either, so a
`DeadLetterDepth` reads both topics itself: one group-less consumer (reading commits nothing)
kept for the life of the process, which at each scrape reads only what was appended since the
last one, up to the end offsets of that moment. It remembers the id and group of every dead
letter of the groups it reports (a few dozen bytes each; a dead-letter topic that grows without
bound is the alarm this gauge raises) and the ids the ledger retired.

A service reports the dead letters of its own consumer groups on the `.dlq` of every topic it
consumes, so the four services' series never overlap. Letters written before the group was
recorded in the headers count under the group "" (only the workbench can tell them apart).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kernel.messaging.kafka import client_security
from shared.kernel.settings import Settings

log = logging.getLogger(__name__)

LEDGER_TOPIC = "yellowcart.dlq.actions"
GROUP_HEADER = "consumer_group"


class DeadLetterDepth:
    def __init__(
        self, settings: Settings, dlq_topics: Iterable[str], groups: Iterable[str] | None = None
    ) -> None:
        """Count the dead letters of `dlq_topics` written by `groups` (every group if None)."""
        self._settings = settings
        self._dlq_topics = sorted(set(dlq_topics))
        self._groups = None if groups is None else frozenset(groups)
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}  # the next offset to read, per partition
        self._letters: dict[str, tuple[str, str]] = {}  # id -> (dlq topic, group)
        self._retired: set[str] = set()
        self._lock = asyncio.Lock()

    def waiting(self) -> dict[tuple[str, str], int]:
        """(dlq topic, group) -> dead letters neither redriven nor purged, as last read."""
        counts = dict.fromkeys(self._letters.values(), 0)  # a group emptied shows 0
        counts.update(
            Counter(where for letter, where in self._letters.items() if letter not in self._retired)
        )
        return counts

    async def refresh(self, timeout_s: float) -> dict[tuple[str, str], int]:
        """Read what the dead-letter topics and the ledger gained since the last call."""
        async with self._lock:
            consumer = await self._started()
            available = await consumer.topics()
            partitions = [
                TopicPartition(topic, partition)
                for topic in [*self._dlq_topics, LEDGER_TOPIC]
                if topic in available
                for partition in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return self.waiting()
            if set(partitions) != consumer.assignment():
                consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            for partition in partitions:
                consumer.seek(partition, max(self._next.get(partition, 0), starts[partition]))
            ends = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + timeout_s
            while not await _at_end(consumer, ends):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dead-letter topics not read to their end in {timeout_s} s")
                batches = await consumer.getmany(*partitions, timeout_ms=100)
                for partition, records in batches.items():
                    for record in records:
                        if record.offset < ends[partition]:
                            self._take(record)
            for partition in partitions:
                self._next[partition] = ends[partition]
            return self.waiting()

    def _take(self, record: Any) -> None:
        if record.topic == LEDGER_TOPIC:
            try:
                self._retired.add(str(json.loads(record.value or b"")["dead_letter"]))
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable record at %s:%d", LEDGER_TOPIC, record.offset)
            return
        headers = dict(record.headers or ())
        group = (headers.get(GROUP_HEADER) or b"").decode("utf-8", "replace")
        if self._groups is None or group in self._groups:
            letter = f"{record.topic}:{record.partition}:{record.offset}"
            self._letters[letter] = (record.topic, group)

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_security(self._settings),
                bootstrap_servers=self._settings.broker_url,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True
