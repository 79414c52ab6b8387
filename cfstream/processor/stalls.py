"""Noticing a calls partition that has records waiting but makes no progress.

faust's consumer can leave an assigned partition unfetched after a rebalance (faust-streaming
#629). Nothing is lost, since nothing is committed past it, but its calls would wait until the
next rebalance. :class:`StallWatch` finds such partitions from offsets alone; the processor
then logs what faust and aiokafka believe about them and kicks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StallWatch:
    """Per partition: the last position seen and since when it has not moved with work waiting.

    ``position`` is the next offset to process, ``end`` the partition's high watermark; both come
    from the caller, so this stays free of Kafka clients and is tested with plain numbers.
    """

    after_s: float
    _since: dict[int, tuple[int, float]] = field(default_factory=dict)

    def observe(self, partition: int, position: int, end: int, now: float) -> bool:
        """True once ``partition`` has had records waiting at the same position for ``after_s``."""
        if position >= end:
            self._since.pop(partition, None)
            return False
        seen = self._since.get(partition)
        if seen is None or seen[0] != position:
            self._since[partition] = (position, now)
            return False
        return now - seen[1] >= self.after_s

    def reset(self, partition: int, now: float) -> None:
        """Start counting again (after a kick, so one stall is not reported every tick)."""
        if partition in self._since:
            self._since[partition] = (self._since[partition][0], now)

    def forget(self, keep: set[int]) -> None:
        for partition in list(self._since):
            if partition not in keep:
                del self._since[partition]


def describe(consumer: Any, tp: Any) -> dict[str, Any]:
    """What faust's consumer and the aiokafka consumer under it hold about ``tp`` (for logs)."""
    found: dict[str, Any] = {
        "flow_active": getattr(consumer, "flow_active", None),
        "active": tp in (getattr(consumer, "_active_partitions", None) or ()),
        "paused": tp in getattr(consumer, "_paused_partitions", ()),
        "buffered": tp in getattr(consumer, "_buffered_partitions", ()),
        "read_offset": getattr(consumer, "_read_offset", {}).get(tp),
        "committed_offset": getattr(consumer, "_committed_offset", {}).get(tp),
    }
    try:
        inner = consumer._thread._ensure_consumer()
        assignment = inner._fetcher._subscriptions.subscription.assignment
        from aiokafka.structs import TopicPartition

        state = assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment \
            else None
        if state is None:
            found["aiokafka"] = "not assigned"
        else:
            found["aiokafka"] = {
                "paused": state.paused,
                "position": state.position if state.has_valid_position else None,
                "awaiting_reset": state.awaiting_reset,
                "highwater": state.highwater,
                "last_fetch_ms": state.timestamp,
            }
    except Exception as exc:  # only ever used for a log line
        found["aiokafka"] = f"unavailable: {type(exc).__name__}: {exc}"
    return found
