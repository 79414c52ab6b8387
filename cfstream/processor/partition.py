"""One calls partition owned by a replica: its DB, its position, its due index, its timer.

Kafka Streams would call this a stream task. The loop hands it the partition's records in
offset order; it applies :mod:`cfstream.scheduling.rules`, keeping a batch's changes in memory
(reads see them), and fires what is due. :meth:`stage` then puts the batch on the changelog and
into one WriteBatch, which :meth:`write` applies once the broker has the batch's records. Until
then the next batches are applied over the staged ones: reads see their slots, and the timer
fires nothing that waits for their due index entries.

When a call is due: a pending call fires once the partition has been read past everything
appended before its due time (``horizon_ms``, proven by the loop), so a newer call made before
the due time always replaces it first. Only a call that never had a quiet period to wait (no
delay) fires as soon as it is read, after the rest of its batch.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Protocol, cast

import rocksdict

from cfstream.clock import now_ms
from cfstream.codec import dumps
from cfstream.observability.metrics import ProcessorMetrics
from cfstream.processor import state
from cfstream.processor.db import CHANGELOG_OFFSET_KEY, WRITE_OPTIONS, WRITTEN_MS_KEY, close
from cfstream.processor.outputs import Outputs
from cfstream.scheduling import rules
from cfstream.settings import Settings
from cfstream.wire import (
    Call,
    InvalidRecord,
    call_from_dict,
    control_from_dict,
    dead_letter,
    parse_json,
)

logger = logging.getLogger(__name__)

# How long a fired call's id is remembered, so a replay of the calls topic after a crash (up to
# the last commit) is recognised and not run again.
FIRED_RETENTION_MS = 15 * 60 * 1000
# Due index entries one partition's timer takes in a batch, fired or dropped as stale; the rest
# wait for the next turn of the loop (which then does not wait for records).
MAX_ENTRIES_PER_BATCH = 5_000
# A scan that failed on its plain iterator (an I/O error, say) is tried again this much later.
SCAN_RETRY_MS = 1_000
NEVER = 2**63 - 1
# The timer reads the due index with one tailing iterator (RocksDB's ForwardIterator) while
# timers keep coming due. It sees every write, and a seek forward of its last one skips the files
# that hold nothing in between; a new iterator's seek merges every level-0 file and level again.
# Measured: a seek 0.6-0.8 us at 10k and 1M keys, where a new iterator's took 1.3-3 us at rest
# and 12 us with 7 level-0 files; a turn (bench/scale.py) 4-5 us at 10M keys, where a new
# iterator took 47-50 us while compactions lagged a burst of writes.
# It does not support range deletions. One in a file below level 0 fails it with an error, and
# that partition's timer then takes a new plain iterator every turn; in the memtable or level 0
# it is ignored, so the deleted entries come back and are dropped as stale (changelog.clear
# compacts its range deletion away, or below level 0).
DUE_SCAN = rocksdict.ReadOptions()
DUE_SCAN.set_tailing(True)
# Until its next seek the iterator holds the memtables and files of its time, which flushes and
# compactions would free: it is let go once unused this long.
SCAN_KEPT_MS = 1_000


class Windows(Protocol):
    """:class:`cfstream.processor.tracing.WindowTracer`, when the replica's tracing is on (a
    module that loads OpenTelemetry, so it is not imported here)."""

    def follow(self, before: rules.Slot | None, call: Call | None,
               decision: rules.Decision) -> rules.Decision: ...


class PartitionTask:
    def __init__(self, settings: Settings, partition: int, db: rocksdict.Rdict,
                 outputs: Outputs, metrics: ProcessorMetrics, position: int,
                 windows: Windows | None = None) -> None:
        self.settings = settings
        self.windows = windows  # spans of traced calls, when the replica's tracing is on
        self.executions_topic = settings.executions_topic
        self.events_topic = settings.events_topic
        self.partition = partition
        self.db = db
        self.outputs = outputs
        self.metrics = metrics
        self.position = position  # the next calls offset to process
        self.persisted = position  # the next one whose effects are not all in the DB
        self.horizon_ms = 0  # every call appended before this time has been processed
        self.next_due = 0  # no index entry is due before this (0: look)
        self.cursor = 0  # no live index entry is earlier than this due time
        self.scan: rocksdict.RdictIter | None = None  # the timer's, while timers come due
        self.scanned_ms = 0  # when it last sought
        self.tailing = True  # False once the DB turned out to hold a range deletion
        self.pending: int | None = None  # pending calls, once counted
        self.pending_delta = 0  # changes since the count began
        # This batch: key -> [slot before the batch, slot now]; keys due when read.
        self.changes: dict[bytes, list[rules.Slot | None]] = {}
        self.read: dict[bytes, rules.Slot | None] = {}  # slots read from the DB this batch
        self.due_now: list[bytes] = []
        self.dropped: list[bytes] = []  # stale index entries found by the timer
        self.received: dict[str, int] = {}  # calls and deferrals by task, for the metrics
        self.deferred: dict[str, int] = {}
        self.staged: deque[Staged] = deque()  # not yet written, oldest first
        # key -> (the staged batch that changed it last, the slot it left)
        self.unwritten: dict[bytes, tuple[Staged, rules.Slot | None]] = {}
        self.unwritten_due = NEVER  # their earliest due index entry

    # -- records ------------------------------------------------------------------------------

    def process(self, key: bytes | None, value: bytes | None, offset: int,
                timestamp_ms: int | None, now: int) -> None:
        """Apply one calls record; a bad one goes to the dead-letter topic."""
        if offset < self.position:
            return  # read again after a seek: already applied
        try:
            self._apply(key or b"", value, now)
        except InvalidRecord as exc:
            self._dead_letter(exc, key, value, offset, now)
        except Exception as exc:  # a bug must park the record, not stop the replica
            logger.exception("failed to process %s[%d]@%d", self.settings.calls_topic,
                             self.partition, offset)
            self._dead_letter(InvalidRecord("internal", f"internal error: "
                                            f"{type(exc).__name__}: {exc}"),
                              key, value, offset, now)
        self.position = offset + 1
        if timestamp_ms is not None:  # LogAppendTime: the broker's clock, in offset order
            self.horizon_ms = max(self.horizon_ms, timestamp_ms - 1)

    def _apply(self, key: bytes, raw: bytes | None, now: int) -> None:
        data = parse_json(raw, self.settings.max_payload_bytes)
        slot = self._slot(key)
        call: Call | None = None
        if data.get("kind", "call") == "call":
            call = call_from_dict(data, now_ms=now)
            if call.key.encode() != key:
                raise InvalidRecord(
                    "key_mismatch",
                    f"record key {key!r} does not match the call's key {call.key!r} "
                    "(the defer key scoped by task, or the execution id)"
                )
            if rules.due_before(slot, call, now):  # both read late: the pending one runs
                fired = rules.fire_if_due(slot, now, FIRED_RETENTION_MS)
                self._enact(key, fired)
                slot = self._slot(key)  # as kept (its trace, if traced)
            decision = rules.accept(slot, call, now, FIRED_RETENTION_MS, fire_due=False)
            if decision.slot is not None and decision.slot.due_ms <= now:
                self.due_now.append(key)
            self.received[call.task] = self.received.get(call.task, 0) + 1
        else:
            control = control_from_dict(data)
            if control.kind == "tick":  # written by the faust-based processor: fire if due
                decision = rules.tick(slot, control.id, now, FIRED_RETENTION_MS)
            elif control.kind == "finished":  # a worker: the key's run ended
                decision = rules.finished(slot, control.id, control.attempt, now)
            else:
                decision = rules.cancel(slot, control.id, now, FIRED_RETENTION_MS,
                                        control.reason)
        self._enact(key, decision, call)

    # -- timers ------------------------------------------------------------------------------

    def fire_read(self, now: int) -> None:
        """Fire the calls of this batch that had no quiet period to wait (no delay): the latest
        of each key. A call whose quiet period passed unread waits for the horizon instead."""
        for key in self.due_now:
            slot = self._slot(key)
            if rules.fires_when_read(slot):
                self._enact(key, rules.fire_if_due(slot, now, FIRED_RETENTION_MS))
        self.due_now.clear()

    def fire_due(self, now: int) -> None:
        """Fire what the due index holds up to ``min(now, horizon)``; drop stale entries.

        The scan starts at the cursor, behind which no entry is left, so it never walks keys
        that are not due, nor the tombstones of entries it dropped before.
        """
        # An entry a staged batch puts in the index is not there yet: the scan must not pass it.
        limit = min(now, self.horizon_ms, self.unwritten_due - 1)
        if self.next_due > limit:
            if now - self.scanned_ms >= SCAN_KEPT_MS:
                self.scan = None
            return
        it = self._due_scan(now)
        taken = 0
        next_due = NEVER
        while it.valid():
            raw = it.key()
            if not raw.startswith(state.DUE_PREFIX):
                break
            due, key = state.parse_due_key(raw)
            if due > limit or taken >= MAX_ENTRIES_PER_BATCH:
                next_due = due
                break
            slot = self._slot(key)
            if slot is not None and slot.due_ms == due and slot.timer_id == it.value().decode():
                self._enact(key, rules.tick(slot, slot.timer_id, now, FIRED_RETENTION_MS))
            else:  # the slot moved on (replaced, restored over, deleted): drop the entry
                self.dropped.append(raw)
            taken += 1
            it.next()
        else:
            error = _error(it)
            if error is not None:  # it ended on an error, not at the index's end
                self._scan_failed(it, error, now)
                return
        self.next_due = min(next_due, self.unwritten_due)
        # Everything before it was fired or dropped (deleted when the batch is written).
        self.cursor = min(next_due, limit + 1)

    def _due_scan(self, now: int) -> rocksdict.RdictIter:
        """An iterator over the due index, at the cursor: the timer's tailing one, kept for the
        next turns, or a new plain one (see DUE_SCAN)."""
        if self.tailing:
            it = self.scan = self.scan or self.db.iter(DUE_SCAN)
            self.scanned_ms = now
        else:
            it = self.db.iter()
        it.seek(state.due_key(self.cursor, b""))
        return it

    def _scan_failed(self, it: rocksdict.RdictIter, error: Exception, now: int) -> None:
        """The timer's scan ended on an error. It scans again from the cursor (what this scan
        fired or dropped is staged, so nothing fires twice): at once with a plain iterator if
        the tailing one failed (a range deletion), else SCAN_RETRY_MS later."""
        if it is self.scan:
            self.scan, self.tailing, self.next_due = None, False, 0
            logger.info("%s[%d]: the timer's tailing iterator failed (%s); it takes a new "
                        "iterator each turn from now on", self.settings.calls_topic,
                        self.partition, error)
        else:
            self.next_due = now + SCAN_RETRY_MS
            logger.warning("%s[%d]: the timer's scan failed (%s); trying again in %d ms",
                           self.settings.calls_topic, self.partition, error, SCAN_RETRY_MS)

    def close(self) -> None:
        """Close the partition's DB; the timer's iterator goes first, as none may outlive it."""
        self.scan = None
        close(self.db)

    # -- state -------------------------------------------------------------------------------

    def _slot(self, key: bytes) -> rules.Slot | None:
        change = self.changes.get(key)
        if change is not None:
            return change[1]
        return self._stored(key)

    def prefetch(self, keys: list[bytes]) -> None:
        """Read the slots of a batch's keys in one multi-get (measured: 2.5 -> 1.7 us a key)."""
        read, changes = self.read, self.changes
        unwritten = self.unwritten
        wanted = [key for key in dict.fromkeys(keys)
                  if key not in read and key not in changes and key not in unwritten]
        if wanted:
            # A list in, a list out (rocksdict's stub only knows a single key).
            raws = cast(list[bytes | None], self.db.get([state.slot_key(key) for key in wanted]))
            for key, raw in zip(wanted, raws, strict=True):
                read[key] = state.decode_slot(raw)

    def _stored(self, key: bytes) -> rules.Slot | None:
        """The key's slot as the batches staged left it, or as the DB holds it (read once a
        batch)."""
        staged = self.unwritten.get(key)
        if staged is not None:
            return staged[1]
        try:
            return self.read[key]
        except KeyError:
            slot = self.read[key] = state.decode_slot(self.db.get(state.slot_key(key)))
            return slot

    def _enact(self, key: bytes, decision: rules.Decision, call: Call | None = None) -> None:
        """Keep the decision's slot and produce its executions and events (``call``: the call
        it took in, if any)."""
        if self.windows is not None:
            decision = self.windows.follow(self._slot(key), call, decision)
        if decision.changed:
            change = self.changes.get(key)
            if change is None:
                self.changes[key] = [self._stored(key), decision.slot]
            else:
                change[1] = decision.slot
        metrics, produce = self.metrics, self.outputs.produce
        for execution in decision.executions:
            produce(self.executions_topic, key, dumps(execution.to_dict()))
            if decision.changed:  # not a replay's second send
                metrics.fires.inc()
                metrics.fire_lateness.observe((execution.fired_ms - execution.due_ms) / 1000)
        for item in decision.events:
            produce(self.events_topic, item["id"].encode(), dumps(item))
            if item["type"] == "deferred":
                task = item["task"]
                self.deferred[task] = self.deferred.get(task, 0) + 1

    def stage(self) -> None:
        """Put this batch's slot changes on the changelog and into a WriteBatch, written by
        :meth:`write`. Reads see the slots of every batch staged and not written."""
        staged = Staged(self.position, list(self.changes))
        self.staged.append(staged)
        unwritten = self.unwritten
        for key, (_, after) in self.changes.items():
            unwritten[key] = (staged, after)
        self.read.clear()
        if not self.changes and not self.dropped and not self.received and not self.deferred:
            return
        batch = staged.batch = rocksdict.WriteBatch(raw_mode=True)
        for raw in self.dropped:
            batch.delete(raw)
        self.dropped.clear()
        changelog, partition = self.outputs.changelog_topic, self.partition
        for key, (before, after) in self.changes.items():
            slot_key = state.slot_key(key)
            encoded = state.encode_slot(after) if after is not None else None
            self.outputs.produce(changelog, slot_key, encoded, partition)
            if encoded is None:
                batch.delete(slot_key)
            else:
                batch.put(slot_key, encoded)
            same_timer = (before is not None and after is not None
                          and before.due_ms == after.due_ms
                          and before.timer_id == after.timer_id)
            # An entry ahead of the cursor stays until the timer reaches and drops it: deleted
            # now, its tombstone would lie in the way of every scan until then.
            if before is not None and not same_timer and before.due_ms < self.cursor:
                batch.delete(state.due_key(before.due_ms, key))
            if after is not None and not same_timer:
                batch.put(state.due_key(after.due_ms, key), after.timer_id.encode())
                staged.earliest_due = min(staged.earliest_due, after.due_ms)
                self.unwritten_due = min(self.unwritten_due, after.due_ms)
                if after.due_ms < self.next_due:
                    self.next_due = after.due_ms
                if after.due_ms < self.cursor:
                    self.cursor = after.due_ms
            self.pending_delta += ((after is not None and after.call is not None)
                                   - (before is not None and before.call is not None))
        self.changes.clear()
        for task, count in self.received.items():
            self.metrics.received(task, count)
        self.received.clear()
        for task, count in self.deferred.items():
            self.metrics.deferred(task, count)
        self.deferred.clear()

    def write(self, changelog_offset: int | None) -> None:
        """Apply the oldest staged WriteBatch (the broker has its records), with the changelog
        offset: the effects of the calls before its position are then persisted."""
        staged = self.staged.popleft()
        unwritten = self.unwritten
        for key in staged.keys:
            if unwritten[key][0] is staged:  # (else a later batch changed it again)
                del unwritten[key]
        self.persisted = staged.position
        self.unwritten_due = min((later.earliest_due for later in self.staged), default=NEVER)
        batch = staged.batch
        if batch is None:
            if changelog_offset is None:
                return
            batch = rocksdict.WriteBatch(raw_mode=True)
        if changelog_offset is not None:
            batch.put(CHANGELOG_OFFSET_KEY, str(changelog_offset).encode())
            batch.put(WRITTEN_MS_KEY, str(now_ms()).encode())
        self.db.write(batch, WRITE_OPTIONS)

    def pending_calls(self) -> int | None:
        return None if self.pending is None else self.pending + self.pending_delta

    # -- bad records -------------------------------------------------------------------------

    def _dead_letter(self, error: InvalidRecord, key: bytes | None, value: bytes | None,
                     offset: int, now: int) -> None:
        topic = self.settings.calls_topic
        parked = dead_letter(error, topic, self.partition, offset, key, value, now)
        self.metrics.dead_letters.labels(reason=error.code).inc()
        logger.warning("dead-lettering %s[%d]@%d: %s", topic, self.partition, offset,
                       parked.reason)
        self.outputs.produce(self.settings.dead_letter_topic, key=parked.key,
                             value=parked.value, headers=parked.headers)
        self.outputs.produce(self.settings.events_topic, parked.event_key, parked.event)


class Staged:
    """A batch staged and not yet written: its WriteBatch (None: nothing to write), the calls
    offset it covers up to, the keys it changed and its earliest due index entry."""

    __slots__ = ("position", "keys", "batch", "earliest_due")

    def __init__(self, position: int, keys: list[bytes]) -> None:
        self.position = position
        self.keys = keys
        self.batch: rocksdict.WriteBatch | None = None
        self.earliest_due = NEVER


def _error(it: rocksdict.RdictIter) -> Exception | None:
    """What stopped ``it``, if not the end of the DB."""
    try:
        it.status()
    except Exception as exc:  # noqa: BLE001 - rocksdict raises RocksDB's status as Exception
        return exc
    return None
