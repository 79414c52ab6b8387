"""Background threads that keep the console's model current, the way ``cfstream events`` and
``cfstream pending`` read Kafka: no consumer group, so any number of consoles and processor
replicas can run. Each thread retries on any error (the broker restarting, a topic not yet
created) and says on the page what it cannot read meanwhile."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer

from cfstream.clock import now_ms
from cfstream.console.state import Model
from cfstream.events.tail import tail
from cfstream.kafka.config import consumer_config
from cfstream.processor.pending import pending_calls
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# On start, read this much of the events topic: recent stories and totals are there at once.
HISTORY_MS = 3_600_000
# After a reconnect, re-read this much before the latest event seen (duplicates are dropped):
# events of several writers do not arrive in time order.
REREAD_MS = 10_000
# Wait between attempts when Kafka or a topic is not there.
RETRY_S = 2.0
# The changelog is read again this often, or twice as long as the last read took.
PENDING_REFRESH_S = 1.0


class Feed:
    """Two daemon threads: the events topic followed, the changelog re-read."""

    def __init__(self, settings: Settings, model: Model) -> None:
        self.settings = settings
        self.model = model
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow_events, name="console-events", daemon=True),
            threading.Thread(target=self._refresh_pending, name="console-pending", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _follow_events(self) -> None:
        since = now_ms() - HISTORY_MS
        while not self._stop.is_set():
            try:
                if not self._topic_exists(self.settings.events_topic):
                    self.model.set_error("events", f"no topic {self.settings.events_topic} yet "
                                                   "(`cfstream topics create` makes it)")
                    self._stop.wait(RETRY_S)
                    continue
                self.model.set_error("events", None)
                for event in tail(self.settings, follow=True, since_ms=since,
                                  stop=self._stop.is_set):
                    self.model.add_event(event)
                    ts = event.get("ts_ms")
                    if isinstance(ts, int):
                        since = max(since, ts - REREAD_MS)
            except Exception as exc:
                logger.warning("reading %s: %s; retrying", self.settings.events_topic, exc)
                self.model.set_error("events", f"cannot read {self.settings.events_topic}: {exc}")
                self._stop.wait(RETRY_S)

    def _refresh_pending(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                found = pending_calls(self.settings)
            except Exception as exc:
                logger.warning("reading the changelog: %s; retrying", exc)
                self.model.set_error("pending", f"cannot read the processors' changelog: {exc}")
                self._stop.wait(RETRY_S)
                continue
            self.model.set_pending(found, now_ms())
            self.model.set_error("pending", None)
            self._stop.wait(max(PENDING_REFRESH_S, 2 * (time.monotonic() - started)))

    def _topic_exists(self, topic: str) -> bool:
        consumer = Consumer(consumer_config(self.settings, None))
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            return metadata is not None and metadata.error is None and bool(metadata.partitions)
        finally:
            consumer.close()
