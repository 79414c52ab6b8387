"""A consumer that stops fetching, as librdkafka's can after a broker restart (librdkafka#5153),
for the readers' stall guards (cfstream.kafka.stall)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message


class Stalls(Consumer):
    """Assigned like any consumer; returns the first record it fetches, then never another."""

    def poll(self, *args: Any, **kwargs: Any) -> Message | None:
        if getattr(self, "stalled", False):
            time.sleep(0.1)
            return None
        message = super().poll(*args, **kwargs)
        self.stalled = message is not None
        return message

    def consume(self, *args: Any, **kwargs: Any) -> list[Message]:
        return [] if getattr(self, "stalled", False) else super().consume(*args, **kwargs)


def first_stalls(made: list[Consumer]) -> Callable[[dict[str, Any]], Consumer]:
    """A stand-in for ``Consumer``: the first one made stalls, the others read; all kept in
    ``made``."""

    def new_consumer(config: dict[str, Any]) -> Consumer:
        made.append((Stalls if not made else Consumer)(config))
        return made[-1]

    return new_consumer
