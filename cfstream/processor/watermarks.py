"""Asking the broker where calls partitions end, so the loop knows what it has read.

A high watermark asked for at time ``t`` is past every record appended before ``t``; once a
partition's position reaches it, every call made before ``t`` has been processed and calls due
by ``t`` may fire. The loop says which partitions wait for such a proof; this thread asks for
them in one request per round and keeps the latest answer per partition.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from cfstream.kafka.config import admin_config
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
# After a failed request (the broker away), wait this long before asking again.
RETRY_BACKOFF = 0.5


class Watermarks:
    """``want()`` partitions; read ``answers``: partition -> (asked at ms, high watermark)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.calls_topic
        self.admin = AdminClient(admin_config(settings))
        self.answers: dict[int, tuple[int, int]] = {}
        self._wanted: set[int] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="cfstream-watermarks",
                                        daemon=True)
        self._thread.start()

    def want(self, partitions: set[int]) -> None:
        """Ask for these partitions' ends (again) as soon as the current round is done."""
        if partitions:
            with self._cond:
                self._wanted |= partitions
                self._cond.notify()

    def forget(self, partition: int) -> None:
        with self._cond:
            self._wanted.discard(partition)
            self.answers.pop(partition, None)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=REQUEST_TIMEOUT + 1)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                wanted, self._wanted = self._wanted, set()
            asked = int(time.time() * 1000)
            try:
                futures = self.admin.list_offsets(
                    {TopicPartition(self.topic, p): OffsetSpec.latest() for p in wanted},
                    request_timeout=REQUEST_TIMEOUT)
                found = {tp.partition: future.result().offset for tp, future in futures.items()}
            except KafkaException as exc:
                logger.debug("no high watermarks for %s: %s", sorted(wanted), exc)
                with self._cond:
                    self._wanted |= wanted
                time.sleep(RETRY_BACKOFF)
                continue
            with self._cond:
                for partition, high in found.items():
                    self.answers[partition] = (asked, high)
