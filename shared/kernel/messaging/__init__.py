"""Kafka messaging: producers, the FastStream broker, the event consumer."""

from shared.kernel.messaging.consumer import (
    REDRIVE_GROUP_HEADER,
    BatchHandler,
    ConsumerMetrics,
    EventConsumer,
    EventHandler,
    RetryPolicy,
    consumer_lag,
    dead_letter_headers,
    dlq_topic,
    subscribe_events,
)
from shared.kernel.messaging.kafka import (
    AIOKafkaSender,
    FastStreamSender,
    RecordSender,
    as_sender,
    make_kafka_broker,
    make_producer,
    producer_config,
    send_and_wait,
)

__all__ = [
    "REDRIVE_GROUP_HEADER",
    "AIOKafkaSender",
    "BatchHandler",
    "ConsumerMetrics",
    "EventConsumer",
    "EventHandler",
    "FastStreamSender",
    "RecordSender",
    "RetryPolicy",
    "as_sender",
    "consumer_lag",
    "dead_letter_headers",
    "dlq_topic",
    "make_kafka_broker",
    "make_producer",
    "producer_config",
    "send_and_wait",
    "subscribe_events",
]
