"""Asking the broker where calls partitions end, so the loop knows what it has read.

A high watermark asked for at time ``t`` is past every record appended before ``t``; once a
partition's position reaches it, every call made before ``t`` has been processed and calls due
by ``t`` may fire. The loop says which partitions wait for such a proof; this thread asks for
them in one request per round and keeps the latest answer per partition.

Every want is asked for at least once, and a partition goes on being asked for, round after
round, for KEEP_ASKING_MS after the loop last wanted it. While timers keep coming due in a
partition that takes no new calls, the loop then finds an answer at most a round old at the
start of its turn. Asked only when the loop wanted one, rounds of about 1 ms came about 3 ms
apart, a turn's length (bench/results/timers-ab-e9a266b.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from cfstream.clock import now_ms
from cfstream.kafka.config import admin_config
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
# After a failed request (the broker away), wait this long before asking again.
RETRY_BACKOFF = 0.2
# Failures in a row before the next one is logged as a warning, not at debug level.
WARN_AFTER_FAILURES = 10
# How long a partition is asked for again after the loop last wanted it (see the module's doc).
KEEP_ASKING_MS = 20
# A round starts at most this often: one costs ~0.1 ms of this process's CPU.
ROUND_INTERVAL = 0.001


class Horizon(Protocol):
    """What a partition's task knows of its proof (:class:`~.partition.PartitionTask`)."""

    next_due: int  # when its next call is due (ms)
    horizon_ms: int  # every call made before this has been read
    position: int  # the next offset to read


class Watermarks:
    """``want()`` partitions; read ``answers``: partition -> (asked at ms, high watermark)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.calls_topic
        self.admin = AdminClient(admin_config(settings))
        self.failures = 0
        self.answers: dict[int, tuple[int, int]] = {}
        self._wanted: dict[int, int] = {}  # partition -> asked for until (ms)
        self._unasked: set[int] = set()  # wanted since the last round began: asked in the next
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="cfstream-watermarks",
                                        daemon=True)
        self._thread.start()

    def want(self, partitions: set[int]) -> None:
        """Ask for these partitions' ends (again) as soon as the current round is done, and
        round after round for KEEP_ASKING_MS."""
        if partitions:
            until = now_ms() + KEEP_ASKING_MS
            with self._cond:
                for partition in partitions:
                    self._wanted[partition] = until
                self._unasked |= partitions
                self._cond.notify()

    def prove(self, tasks: Mapping[int, Horizon], now: int) -> None:
        """Move each partition's horizon with the broker's answers; ask where one is needed."""
        wanted = set()
        answers = self.answers
        for partition, task in tasks.items():
            needed = min(task.next_due, now)
            if task.next_due > now or task.horizon_ms >= needed:
                continue
            answer = answers.get(partition)
            if answer is not None:
                asked, high = answer
                if task.position >= high:
                    task.horizon_ms = max(task.horizon_ms, asked)
                if asked >= needed:
                    continue  # proof on its way: the position has yet to reach its end
            if task.horizon_ms < needed:
                wanted.add(partition)
        self.want(wanted)

    def forget(self, partition: int) -> None:
        with self._cond:
            self._wanted.pop(partition, None)
            self._unasked.discard(partition)
            self.answers.pop(partition, None)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=REQUEST_TIMEOUT + 1)

    def _run(self) -> None:
        started = 0.0
        while True:
            with self._cond:
                while not self._wanted and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
            time.sleep(max(0.0, started + ROUND_INTERVAL - time.monotonic()))
            started = time.monotonic()
            asked = now_ms()
            with self._cond:
                if self._stopped:
                    return
                for partition, until in list(self._wanted.items()):
                    if until < asked and partition not in self._unasked:
                        del self._wanted[partition]
                wanted, self._unasked = set(self._wanted), set()
            if not wanted:
                continue
            try:
                found = self._ask(wanted)
            except Exception as exc:  # noqa: BLE001 - whatever it was, ask again
                self._failed(wanted, exc)
                continue
            self.failures = 0
            with self._cond:
                for partition, high in found.items():
                    self.answers[partition] = (asked, high)

    def _ask(self, wanted: set[int]) -> dict[int, int]:
        futures = self.admin.list_offsets(
            {TopicPartition(self.topic, p): OffsetSpec.latest() for p in wanted},
            request_timeout=REQUEST_TIMEOUT)
        # Bounded here too: an answer lost across a broker restart must not hold the thread.
        return {tp.partition: future.result(timeout=REQUEST_TIMEOUT + 1).offset
                for tp, future in futures.items()}

    def _failed(self, wanted: set[int], exc: Exception) -> None:
        self.failures += 1
        log = logger.warning if self.failures % WARN_AFTER_FAILURES == 0 else logger.debug
        log("no high watermarks for %s[%s] (%d failures in a row): %r; due calls there wait",
            self.topic, ",".join(map(str, sorted(wanted))), self.failures, exc)
        # A client that failed may hold a connection state that never recovers: start anew.
        self.admin = AdminClient(admin_config(self.settings))
        with self._cond:  # each asked for again after the pause, even if its want lapsed
            for partition in wanted:
                self._wanted.setdefault(partition, 0)
            self._unasked |= wanted
        time.sleep(RETRY_BACKOFF)
