"""One processor replica: a faust app whose agent applies the scheduling rules to each record.

The timer changes no state (all of it is written by the agent, in the partition's order), so
it only finds what is due and puts a ``tick`` record on the calls topic, in the partition of the
key; the agent then applies :func:`cfstream.scheduling.rules.tick`, which checks the id and the
due time again. A lost, duplicated or forged tick therefore changes nothing it should not.

The agent takes records in batches and writes through :mod:`cfstream.processor.store`: RocksDB
directly, and every record it produces (changelog, executions, events) through one librdkafka
producer, flushed before faust may commit the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition
from faust.types import TP

from cfstream.codec import dumps
from cfstream.kafka.config import consumer_config
from cfstream.observability.metrics import ProcessorMetrics
from cfstream.processor import restore, state
from cfstream.processor.faust_config import app_options
from cfstream.processor.stalls import StallWatch, describe
from cfstream.processor.state import TABLE
from cfstream.processor.store import (
    OutputError,
    Outputs,
    Writes,
    index_current,
    rebuild_due_index,
    record_offset,
)
from cfstream.scheduling import rules
from cfstream.settings import Settings
from cfstream.wire import InvalidRecord, call_from_dict, control_from_dict, parse_json

logger = logging.getLogger(__name__)

# How long a fired call's id is remembered, so a replay of the calls topic after a crash (up to
# the last commit, about a second) is recognised and not run again.
FIRED_RETENTION_MS = 15 * 60 * 1000
# A tick not acted on within this time is sent again (the replica it went to may have died).
TICK_RETRY_MS = 5_000
# Ticks in flight at once; bounds memory and the burst a replica sends after a long outage.
MAX_INFLIGHT_TICKS = 10_000
# Seconds between updates of the pending-keys and lag gauges.
GAUGE_INTERVAL = 5.0
# The agent takes up to BATCH_MAX records, waiting at most BATCH_WITHIN seconds for more.
BATCH_MAX = 2_000
BATCH_WITHIN = 0.005
# Longest time spent reading records the consumer skipped.
MISSED_READ_TIMEOUT = 10.0
# A partition with records waiting and no progress for this long is stalled (faust #629).
STALL_AFTER = 10.0
STALL_CHECK_INTERVAL = 5.0
NEVER = 2**63 - 1


def now_ms() -> int:
    return int(time.time() * 1000)


class Processor:
    def __init__(self, settings: Settings, partitions: int,
                 metrics: ProcessorMetrics | None = None) -> None:
        self.settings = settings
        self.partitions = partitions
        self.metrics = metrics or ProcessorMetrics()
        # Pending calls per partition, counted from the table once per assignment, then kept.
        self.pending: dict[int, int] = {}
        self.processed: dict[int, int] = {}  # partition -> next offset to process
        restore.configure(settings)
        self.app = faust.App(**app_options(settings, partitions))
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.calls = self.app.topic(settings.calls_topic, partitions=partitions, **raw)
        self.table = self.app.Table(TABLE, partitions=partitions, key_type=bytes,
                                    value_type=bytes)
        self.outputs = Outputs(settings, state.changelog_topic(settings))
        self.writes = Writes()
        self.indexed: set[int] = set()  # partitions whose due index was rebuilt since assigned
        self.due_now: set[tuple[int, bytes]] = set()  # (partition, key) to fire after the batch
        self._ready = False
        self.inflight: dict[tuple[int, bytes, str], int] = {}  # tick -> when sent
        self.cursor: dict[int, bytes] = {}  # partition -> where the next due scan starts
        self.next_due: dict[int, int] = {}  # partition -> earliest due time not yet ticked
        # partition -> next offset this replica must see; faust can drop a record after a
        # rebalance ("getmany called while flow not active") and then commit past it.
        self.expected: dict[int, int] = {}
        self.stalls = StallWatch(STALL_AFTER)
        self.app.on_partitions_assigned.connect(self._forget_positions)
        self.app.on_partitions_revoked.connect(self._forget_positions)
        self.app.agent(self.calls, name="cfstream.scheduler")(self._process)
        self.app.timer(settings.tick_interval, name="cfstream.timer")(self._scan)
        self.app.timer(GAUGE_INTERVAL, name="cfstream.gauges")(self._update_gauges)
        self.app.timer(STALL_CHECK_INTERVAL, name="cfstream.stalls")(self._check_stalls)

    def ready(self) -> bool:
        """Joined the group, not rebalancing, tables restored, due index rebuilt.

        Called from the HTTP thread, so it reads a flag the timer keeps: faust builds some of
        its services on first access (``app.tables.recovery``), and one built from another
        thread races faust's own and left a replica stuck in recovery.
        """
        return self._ready

    def _readiness(self) -> bool:
        app = self.app
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # faust's TableManager
        if app.rebalancing or app.in_recovery or not recovery.completed.is_set():
            return False
        actives = {tp.partition for tp in app.assignor.assigned_actives()
                   if tp.topic == self.settings.calls_topic}
        return actives <= self.indexed

    # -- agent: every state change happens here ---------------------------------------------

    async def _forget_positions(self, sender: Any, /, *args: Any, **_: Any) -> None:
        for tp in args[0] if args else ():
            if tp.topic == self.settings.calls_topic:
                self.expected.pop(tp.partition, None)
                self.stalls.forget(set())
                self.next_due.pop(tp.partition, None)
                self.cursor.pop(tp.partition, None)
                self.indexed.discard(tp.partition)

    async def _process(self, stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, BATCH_WITHIN):
            actives = self.app.assignor.assigned_actives()
            for event in events:
                message = event.message
                if TP(message.topic, message.partition) in actives:
                    await self._take(message)
            self._fire_due()
            if not await self._settle():  # faust acknowledges the batch after this
                return

    async def _take(self, message: Any) -> None:
        expected = self.expected.get(message.partition)
        if expected is None:  # first record since the assignment: faust seeked to ...
            expected = await self._start_offset(message.partition)
        if message.offset < expected:
            return  # seen already: delivered again after a seek back
        if message.offset > expected:
            logger.warning("%s[%d]: offsets %d..%d were skipped by the consumer; reading "
                           "them directly", message.topic, message.partition, expected,
                           message.offset - 1)
            for key, value, offset in self._read_missed(message.partition, expected,
                                                        message.offset):
                self._apply_or_park(message, key, value, offset)
        self.expected[message.partition] = message.offset + 1
        self._apply_or_park(message, message.key, message.value, message.offset)

    async def _settle(self) -> bool:
        """Wait until what the batch produced is on the broker, then record the changelog
        offsets where faust's restore looks for them. False if Kafka refused some of it."""
        dbs = self.table.data._dbs  # type: ignore[attr-defined]  # faust RocksDB store
        self.writes.apply(dbs)
        await self.outputs.flush()
        for partition, offset in self.outputs.take_persisted():
            db = dbs.get(partition)
            if db is not None:
                record_offset(db, offset, indexed=partition in self.indexed)
        errors = self.outputs.take_errors()
        if errors:  # never acknowledge records whose effects were refused: stop, and replay
            await self.app.crash(OutputError(
                f"{len(errors)} records refused by Kafka, stopping so the calls are replayed "
                f"from the last commit: {'; '.join(errors[:5])}"))
            return False
        return True

    async def _start_offset(self, partition: int) -> int:
        """Where faust's consumer started reading ``partition`` after the assignment: the
        committed offset, else the partition's first offset."""
        tp = TP(self.settings.calls_topic, partition)
        consumer: Any = self.app.consumer
        committed = consumer._committed_offset.get(tp)
        if committed:
            return int(committed)
        earliest = await consumer.earliest_offsets(tp)
        return int(earliest.get(tp) or 0)

    def _read_missed(self, partition: int, start: int, end: int) -> list[tuple[Any, Any, int]]:
        """Records [start, end) of a calls partition, read past faust's consumer."""
        consumer = Consumer(consumer_config(self.settings, None))
        found: list[tuple[Any, Any, int]] = []
        try:
            consumer.assign([TopicPartition(self.settings.calls_topic, partition, start)])
            deadline = time.monotonic() + MISSED_READ_TIMEOUT
            while len(found) < end - start and time.monotonic() < deadline:
                for record in consumer.consume(end - start - len(found), 1.0):
                    offset = record.offset()
                    if record.error() is None and offset is not None and offset < end:
                        found.append((record.key(), record.value(), offset))
        finally:
            consumer.close()
        if len(found) < end - start:
            logger.error("%s[%d]: read only %d of the %d skipped records",
                         self.settings.calls_topic, partition, len(found), end - start)
        return found

    def _apply_or_park(self, message: Any, key: bytes | None, value: bytes | None,
                       offset: int) -> None:
        try:
            self._apply(key or b"", value, message.partition)
        except InvalidRecord as exc:
            self._dead_letter(message, exc, key, value, offset)
        except Exception as exc:  # a bug must park the record, not stop the replica
            logger.exception("failed to process %s[%d]@%d", message.topic, message.partition,
                             offset)
            self._dead_letter(message, InvalidRecord("internal", f"internal error: "
                                                     f"{type(exc).__name__}: {exc}"),
                              key, value, offset)
        self.processed[message.partition] = offset + 1

    def _apply(self, key: bytes, raw: bytes | None, partition: int) -> None:
        now = now_ms()
        data = parse_json(raw, self.settings.max_payload_bytes)
        kind = data.get("kind", "call")
        db = self.table.data._db_for_partition(partition)  # type: ignore[attr-defined]
        slot = state.decode_slot(self.writes.get(db, partition, state.slot_key(key)))
        if kind == "call":
            call = call_from_dict(data, now_ms=now)
            if call.key.encode() != key:
                raise InvalidRecord(
                    "key_mismatch",
                    f"record key {key!r} does not match the call's key {call.key!r} "
                    "(the defer key scoped by task, or the execution id)"
                )
            if rules.due_before(slot, call, now):  # both read late: the pending one runs
                fired = rules.fire_if_due(slot, now, FIRED_RETENTION_MS)
                self._enact(key, slot, fired, partition)
                slot = fired.slot
            # Due already (read late): fired at the end of the batch, after any newer call.
            decision = rules.accept(slot, call, now, FIRED_RETENTION_MS, fire_due=False)
            if decision.slot is not None and decision.slot.due_ms <= now:
                self.due_now.add((partition, key))
            self.metrics.received(call.task)
        else:
            control = control_from_dict(data)
            if control.kind == "tick":
                self.inflight.pop((partition, key, control.id), None)
                decision = rules.tick(slot, control.id, now, FIRED_RETENTION_MS)
            else:
                decision = rules.cancel(slot, control.id, now, FIRED_RETENTION_MS,
                                        control.reason)
        self._enact(key, slot, decision, partition)

    def _fire_due(self) -> None:
        """Fire the calls of this batch that were due when read (the latest call of each key),
        or tick them when a newer call may still be behind them in the partition."""
        now = now_ms()
        for partition, key in self.due_now:
            try:
                db = self.table.data._db_for_partition(partition)  # type: ignore[attr-defined]
                slot = state.decode_slot(self.writes.get(db, partition, state.slot_key(key)))
                if slot is not None and slot.call is not None and not rules.fires_when_read(slot):
                    self._send_tick((partition, key, slot.timer_id), now)
                    continue
                self._enact(key, slot, rules.fire_if_due(slot, now, FIRED_RETENTION_MS),
                            partition)
            except Exception:  # its tick fires it later: log, keep the batch going
                logger.exception("failed to fire %r of %s[%d]", key, TABLE, partition)
        self.due_now.clear()

    def _enact(self, key: bytes, slot: rules.Slot | None, decision: rules.Decision,
               partition: int) -> None:
        """Store the decision's slot and produce its executions and events."""
        if decision.changed:
            self._store(key, slot, decision.slot, partition)
        for execution in decision.executions:
            self.outputs.produce(self.settings.executions_topic, key,
                                 dumps(execution.to_dict()))
            if decision.changed:  # not a replay's second send
                self.metrics.fires.inc()
                self.metrics.fire_lateness.observe(
                    (execution.fired_ms - execution.due_ms) / 1000)
        for item in decision.events:
            self.outputs.produce(self.settings.events_topic, item["id"].encode(), dumps(item))
            if item["type"] == "deferred":
                self.metrics.deferred(item["task"])

    def _store(self, key: bytes, old: rules.Slot | None, new: rules.Slot | None,
               partition: int) -> None:
        encoded = state.encode_slot(new) if new is not None else None  # may raise: change nothing
        was = old is not None and old.call is not None
        now = new is not None and new.call is not None
        if partition in self.pending and was != now:
            self.pending[partition] += 1 if now else -1
        writes, changelog = self.writes, self.outputs.changelog_topic
        if old is not None:
            writes.set(partition, state.due_key(old.due_ms, key), None)  # local: no changelog
        writes.set(partition, state.slot_key(key), encoded)
        self.outputs.produce(changelog, state.slot_key(key), encoded, partition)
        if new is None:
            return
        writes.set(partition, state.due_key(new.due_ms, key), new.timer_id.encode())
        if partition in self.next_due:
            self.next_due[partition] = min(self.next_due[partition], new.due_ms)

    def _dead_letter(self, message: Any, error: InvalidRecord, key: bytes | None,
                     value: bytes | None, offset: int) -> None:
        # A lone surrogate (from the record) cannot be UTF-8: escape it.
        reason = error.reason.encode("utf-8", "backslashreplace").decode("utf-8")
        self.metrics.dead_letters.labels(reason=error.code).inc()
        logger.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                       offset, reason)
        self.outputs.produce(
            self.settings.dead_letter_topic,
            # Kafka clients refuse a record with neither key nor value.
            key=b"" if key is None and value is None else key,
            value=value,
            headers=[("cfstream-reason", reason.encode()),
                     ("cfstream-source", f"{message.topic}:{message.partition}:"
                                         f"{offset}".encode())],
        )
        event = {"v": 1, "type": "invalid", "id": _guess_id(value), "reason": reason,
                 "topic": message.topic, "partition": message.partition,
                 "offset": offset, "ts_ms": now_ms()}
        self.outputs.produce(self.settings.events_topic, (event["id"] or "invalid").encode(),
                             dumps(event))

    # -- timers: find due keys and measure, change nothing -----------------------------------

    async def _update_gauges(self, *_: Any) -> None:
        actives = self._active_dbs()
        for partition in list(self.pending):
            if partition not in actives:
                del self.pending[partition]
        for partition, db in actives.items():
            if partition not in self.pending:
                self.pending[partition] = await _count_pending(db)
            self.metrics.set_pending(partition, self.pending[partition])
            tp = TP(self.settings.calls_topic, partition)
            high = self.app.consumer.highwater(tp) if self.app.consumer else None
            if high is not None and partition in self.processed:
                self.metrics.set_lag(tp.topic, partition, high - self.processed[partition])

    async def _check_stalls(self, *_: Any) -> None:
        """Seek a stalled calls partition back to the next record this replica needs.

        faust drops records it fetched when a rebalance interrupts delivery, then seeks back to
        the committed offset, except where nothing was committed yet (aiokafka seeks only to
        positive offsets): such a partition sits idle with its records unread.
        """
        consumer = self.app.consumer
        if self.app.rebalancing or consumer is None:
            return
        topic = self.settings.calls_topic
        tps = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        self.stalls.forget({tp.partition for tp in tps})
        if not tps:
            return
        try:
            ends = await consumer.highwaters(*tps)
        except Exception as exc:  # the broker may be away: look again next time
            logger.debug("no high watermarks for the stall check: %s", exc)
            return
        now = time.monotonic()
        for tp in tps:
            end = ends.get(tp)
            position = self.expected.get(tp.partition)
            if end is None or self.app.rebalancing:
                continue
            if position is None:
                position = await self._start_offset(tp.partition)
            if self.stalls.observe(tp.partition, position, end, now):
                logger.warning("%s[%d]: %d records waiting at offset %d and no progress for "
                               "%.0fs; seeking back to it (consumer state: %s)", topic,
                               tp.partition, end - position, position, STALL_AFTER,
                               describe(consumer, tp))
                self.metrics.stalls.inc()
                await consumer.seek(tp, position)
                self.stalls.reset(tp.partition, now)

    def _active_dbs(self) -> dict[int, Any]:
        """The RocksDB of each table partition this replica owns (not standbys)."""
        actives = self.app.assignor.assigned_actives()
        dbs = self.table.data._dbs  # type: ignore[attr-defined]  # faust RocksDB store
        return {p: db for p, db in list(dbs.items())
                if TP(self.settings.calls_topic, p) in actives}

    async def _scan(self, *_: Any) -> None:
        self._ready = self._readiness()
        if self.app.rebalancing:
            return
        self.outputs.producer.poll(0)  # serve delivery reports while no batch flushes
        actives = self._active_dbs()
        for partition in actives.keys() - self.indexed:
            if not await self._rebuild_index(partition):
                return  # a rebalance began: the next assignment starts again
        now = now_ms()
        for token, sent in list(self.inflight.items()):
            if now - sent >= TICK_RETRY_MS:
                # Not acted on: the replica it went to may have died. Send again if the
                # partition is still ours; its new owner ticks it otherwise.
                del self.inflight[token]
                if token[0] in actives:
                    self._send_tick(token, now)
        for partition in list(self.cursor):
            if partition not in actives:
                del self.cursor[partition]  # revoked: a later owner starts from the beginning
        for partition, db in actives.items():
            if self.next_due.get(partition, 0) > now:
                continue  # nothing due yet: skip the seek (deleted entries make it slow)
            # Resume after the last entry ticked: deleted entries before it (tombstones until
            # RocksDB compacts them) would make every seek from the start slower.
            start = self.cursor.get(partition, state.DUE_PREFIX)
            due, next_due = _due_entries(db, now, start)
            self.next_due[partition] = next_due
            for raw, key, timer_id in due:
                if len(self.inflight) >= MAX_INFLIGHT_TICKS:
                    self.next_due.pop(partition, None)  # not all sent: look again next tick
                    return
                self.cursor[partition] = raw + b"\x00"
                self._send_tick((partition, key, timer_id), now)

    def _send_tick(self, token: tuple[int, bytes, str], now: int) -> None:
        partition, key, timer_id = token
        self.inflight[token] = now
        tick = {"v": 1, "kind": "tick", "id": timer_id}
        self.outputs.produce(self.settings.calls_topic, key, dumps(tick), partition)

    async def _rebuild_index(self, partition: int) -> bool:
        """Rebuild a newly active partition's due index from its slots; False if a rebalance
        began meanwhile (the partition may have moved: leave it to the next assignment)."""
        started = time.monotonic()
        db = self._active_dbs()[partition]
        if index_current(db):  # a restart on its own state, nothing restored: keep it
            self.indexed.add(partition)
            self.next_due.pop(partition, None)
            self.cursor.pop(partition, None)
            return True
        count = 0
        for done in rebuild_due_index(db):
            count = done
            await asyncio.sleep(0)
            if self.app.rebalancing or partition not in self._active_dbs():
                return False
        self.indexed.add(partition)
        self.next_due.pop(partition, None)
        self.cursor.pop(partition, None)
        logger.info("%s[%d]: due index rebuilt from %d slots in %.2fs", TABLE, partition,
                    count, time.monotonic() - started)
        return True


def _due_entries(db: Any, now: int, start: bytes) -> tuple[list[tuple[bytes, bytes, str]], int]:
    """(raw key, key, timer id) of the entries from ``start`` that are due by ``now``, and the
    due time of the first entry that is not (or a far future if there is none)."""
    found: list[tuple[bytes, bytes, str]] = []
    it = db.iter()
    it.seek(start)
    while it.valid():
        raw = it.key()
        if not raw.startswith(state.DUE_PREFIX):
            break
        due, key = state.parse_due_key(raw)
        if due > now:
            return found, due
        if len(found) >= MAX_INFLIGHT_TICKS:
            return found, now
        found.append((raw, key, it.value().decode()))
        it.next()
    return found, NEVER


async def _count_pending(db: Any) -> int:
    """Slots holding a pending call, counted in chunks so the event loop keeps running."""
    count = seen = 0
    it = db.iter()
    it.seek(state.SLOT_PREFIX)
    while it.valid() and it.key().startswith(state.SLOT_PREFIX):
        count += b'"call"' in it.value()
        seen += 1
        it.next()
        if seen % 10_000 == 0:
            await asyncio.sleep(0)
    return count


def _guess_id(raw: bytes | None) -> str | None:
    try:
        ident = json.loads(raw or b"").get("id")
        if isinstance(ident, str):
            ident.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
            return ident
        return None
    except (ValueError, AttributeError, TypeError, RecursionError):
        return None
