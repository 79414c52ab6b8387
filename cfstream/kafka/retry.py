"""Retrying client calls that fail while the cluster settles (new topics, leader elections)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

T = TypeVar("T")

# A new topic's leaders can take a few seconds to serve offsets even after metadata shows them.
SETTLE_TIMEOUT = 30.0
# Errors that mean "not yet" rather than "no": librdkafka does not flag all of them retriable.
SETTLING = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._WAIT_COORD,
})


def settled(call: Callable[[], T], timeout: float = SETTLE_TIMEOUT) -> T:
    """``call()``, retried on retriable Kafka errors until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in SETTLING)
            if not retriable or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
