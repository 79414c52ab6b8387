"""Whether an execution read from the executions topic should run here.

Executions are redelivered: after a crash or a rebalance, a partition's new owner reads them
again from the last commit. Two memories tell a redelivered execution from a new one:

- what this worker finished or handed on (ids and their latest attempt), and
- the events topic: what other workers began, merged or finished
  (:class:`~cfstream.worker.seen.SeenEvents`).

The events that matter are the earlier owner's, published before it handed the partition back
(a worker flushes them first). So on the first record of a newly assigned partition the worker
reads the events topic up to date before it runs anything from there.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from cfstream.clock import now_ms
from cfstream.wire import event_order
from cfstream.worker.jobs import Job
from cfstream.worker.seen import MAX_REMEMBERED, SeenEvents

logger = logging.getLogger(__name__)

# Ids remembered as done here, so a redelivered execution is not run again by this worker: as
# many as the events reader remembers of other workers' (it skips this worker's own events).
REMEMBERED_IDS = MAX_REMEMBERED
# Longest wait for the events topic to be read up to date after an assignment.
SYNC_TIMEOUT = 60.0


class Verdict(enum.Enum):
    RUN = "run"  # nothing says this attempt began
    LOST = "lost"  # it began elsewhere and never ended: that worker stopped mid-run
    RETRYING = "retrying"  # it failed, and its retry is on the calls topic: nothing is left
    ENDED = "ended"  # it ran, or was merged, elsewhere


def verdict(known: dict[str, Any] | None, attempt: int) -> Verdict:
    """What to do with attempt ``attempt`` of an execution whose most advanced event is
    ``known`` (None: no event)."""
    if known is None:
        return Verdict.RUN
    seen, _ = event_order(known)
    if seen < attempt or (seen == attempt and known["type"] == "scheduled"):
        return Verdict.RUN  # the events so far are about earlier attempts, or none began
    if seen == attempt and known["type"] == "started":
        return Verdict.LOST
    if known["type"] == "retrying":
        return Verdict.RETRYING
    return Verdict.ENDED


class Dedupe:
    def __init__(self, seen: SeenEvents) -> None:
        self.seen = seen
        # Id -> the latest attempt of it done here (a retry is the same id, a later attempt).
        self._done: OrderedDict[str, int] = OrderedDict()
        # Assigned partitions not yet checked against events -> when assigned (monotonic).
        self._fresh: dict[int, float] = {}
        self._synced_at = float("-inf")  # when the last sync that succeeded began

    def start(self) -> None:
        """Read events from now on: the first execution would otherwise wait for the reader."""
        self.seen.read_since(now_ms())

    def done_here(self, job: Job) -> bool:
        return self._done.get(job.id, 0) >= job.attempt

    def remember(self, job: Job) -> None:
        """``job`` ended here (ran, merged or handed on): a redelivery of it is skipped."""
        self._done[job.id] = max(job.attempt, self._done.get(job.id, 0))
        self._done.move_to_end(job.id)
        if len(self._done) > REMEMBERED_IDS:
            self._done.popitem(last=False)

    def elsewhere(self, job: Job) -> tuple[Verdict, dict[str, Any] | None]:
        """The verdict on ``job`` from the events read so far, and the event it rests on. A job
        checked again (when it leaves the backlog) is looked up only if events came in since."""
        kept = self.seen.kept  # before the lookup: one kept meanwhile is looked at next time
        if job.cleared_at == kept:
            return Verdict.RUN, None
        known = self.seen.known(job.id)
        found = verdict(known, job.attempt)
        if found is Verdict.RUN:
            job.cleared_at = kept
        return found, known

    def assigned(self, partitions: Iterable[int]) -> None:
        now = time.monotonic()
        self._fresh.update((partition, now) for partition in partitions)

    def revoked(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._fresh.pop(partition, None)

    def first_read(self, partition: int, fired_ms: int) -> None:
        """Before the first execution of a newly assigned partition runs: read every event since
        it was fired (``fired_ms``, 0 if unknown). Partitions assigned together share one sync
        instead of stalling the worker once each."""
        assigned = self._fresh.pop(partition, None)
        if assigned is None:
            return
        rewound = self.seen.read_since(fired_ms if fired_ms > 0 else now_ms())
        if not rewound and self._synced_at >= assigned:
            return
        began = time.monotonic()
        if self.seen.sync(SYNC_TIMEOUT):
            self._synced_at = began
        else:
            logger.warning("events not read up to date within %ss; a redelivered execution "
                           "might run again", SYNC_TIMEOUT)

    def close(self) -> None:
        self.seen.close()
