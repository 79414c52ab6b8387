"""One processor replica: a faust app whose agent applies the scheduling rules to each record.

The timer cannot write tables (faust only allows writes inside stream iteration), so it only
finds what is due and puts a ``tick`` record on the calls topic, in the partition of the key;
the agent then applies :func:`cfstream.scheduling.rules.tick`, which checks the id and the due
time again. A lost, duplicated or forged tick therefore changes nothing it should not.
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
from cfstream.processor import state
from cfstream.processor.faust_config import app_options
from cfstream.processor.stalls import StallWatch, describe
from cfstream.processor.state import TABLE
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
# Longest time spent reading records the consumer skipped.
MISSED_READ_TIMEOUT = 10.0
# A partition with records waiting and no progress for this long is stalled (faust #629).
STALL_AFTER = 8.0
STALL_CHECK_INTERVAL = 2.0
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
        self.app = faust.App(**app_options(settings, partitions))
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.calls = self.app.topic(settings.calls_topic, partitions=partitions, **raw)
        self.executions = self.app.topic(settings.executions_topic, partitions=partitions, **raw)
        self.events = self.app.topic(settings.events_topic, **raw)
        self.dead_letters = self.app.topic(settings.dead_letter_topic, **raw)
        self.table = self.app.Table(TABLE, partitions=partitions, key_type=bytes,
                                    value_type=bytes)
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
        """Joined the group, not rebalancing, tables restored. Called from the HTTP thread, so
        it only reads: ``app.tables`` is built on first access, and must be built by faust."""
        app = self.app
        tables = app.__dict__.get("tables")  # faust's cached_property, once faust made it
        if tables is None:
            return False
        return bool(not app.rebalancing and not app.in_recovery
                    and tables.recovery.completed.is_set())

    # -- agent: every state change happens here ---------------------------------------------

    async def _forget_positions(self, sender: Any, /, *args: Any, **_: Any) -> None:
        for tp in args[0] if args else ():
            if tp.topic == self.settings.calls_topic:
                self.expected.pop(tp.partition, None)
                self.stalls.forget(set())
                self.next_due.pop(tp.partition, None)
                self.cursor.pop(tp.partition, None)

    async def _process(self, stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            expected = self.expected.get(message.partition)
            if expected is None:  # first record since the assignment: faust seeked to ...
                expected = await self._start_offset(message.partition)
            if message.offset < expected:
                continue  # seen already: delivered again after a seek back
            if message.offset > expected:
                logger.warning("%s[%d]: offsets %d..%d were skipped by the consumer; reading "
                               "them directly", message.topic, message.partition, expected,
                               message.offset - 1)
                for key, value, offset in self._read_missed(message.partition, expected,
                                                            message.offset):
                    await self._apply_or_park(message, key, value, offset)
            self.expected[message.partition] = message.offset + 1
            await self._apply_or_park(message, message.key, message.value, message.offset)

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

    async def _apply_or_park(self, message: Any, key: bytes | None, value: bytes | None,
                             offset: int) -> None:
        try:
            await self._apply(key or b"", value, message.partition)
        except InvalidRecord as exc:
            await self._dead_letter(message, exc, key, value, offset)
        except Exception as exc:  # a bug must park the record, not stop the replica
            logger.exception("failed to process %s[%d]@%d", message.topic, message.partition,
                             offset)
            await self._dead_letter(message, InvalidRecord("internal", f"internal error: "
                                                           f"{type(exc).__name__}: {exc}"),
                                    key, value, offset)
        self.processed[message.partition] = offset + 1

    async def _apply(self, key: bytes, raw: bytes | None, partition: int) -> None:
        now = now_ms()
        data = parse_json(raw, self.settings.max_payload_bytes)
        kind = data.get("kind", "call")
        slot = state.decode_slot(self.table.get(state.slot_key(key)))
        if kind == "call":
            call = call_from_dict(data, now_ms=now)
            if call.key.encode() != key:
                raise InvalidRecord(
                    "key_mismatch",
                    f"record key {key!r} does not match the call's key {call.key!r} "
                    "(the defer key scoped by task, or the execution id)"
                )
            decision = rules.accept(slot, call, now, FIRED_RETENTION_MS)
            self.metrics.calls_received.labels(task=call.task).inc()
        else:
            control = control_from_dict(data)
            if control.kind == "tick":
                self.inflight.pop((partition, key, control.id), None)
                decision = rules.tick(slot, control.id, now, FIRED_RETENTION_MS)
            else:
                decision = rules.cancel(slot, control.id, now, FIRED_RETENTION_MS,
                                        control.reason)
        if decision.changed:
            self._store(key, slot, decision.slot, partition)
        for execution in decision.executions:
            await self.executions.send(key=key, value=dumps(execution.to_dict()))
            if decision.changed:  # not a replay's second send
                self.metrics.fires.inc()
                self.metrics.fire_lateness.observe(
                    (execution.fired_ms - execution.due_ms) / 1000)
        for item in decision.events:
            await self.events.send(key=item["id"].encode(), value=dumps(item))
            if item["type"] == "deferred":
                self.metrics.deferrals.labels(task=item["task"], where="processor").inc()

    def _store(self, key: bytes, old: rules.Slot | None, new: rules.Slot | None,
               partition: int) -> None:
        encoded = state.encode_slot(new) if new is not None else None  # may raise: change nothing
        was = old is not None and old.call is not None
        now = new is not None and new.call is not None
        if partition in self.pending and was != now:
            self.pending[partition] += 1 if now else -1
        if old is not None:
            self.table.pop(state.due_key(old.due_ms, key), None)
        if new is None or encoded is None:
            self.table.pop(state.slot_key(key), None)
            return
        self.table[state.slot_key(key)] = encoded
        self.table[state.due_key(new.due_ms, key)] = new.timer_id.encode()
        if partition in self.next_due:
            self.next_due[partition] = min(self.next_due[partition], new.due_ms)

    async def _dead_letter(self, message: Any, error: InvalidRecord, key: bytes | None,
                           value: bytes | None, offset: int) -> None:
        # A lone surrogate (from the record) cannot be UTF-8: escape it.
        reason = error.reason.encode("utf-8", "backslashreplace").decode("utf-8")
        self.metrics.dead_letters.labels(reason=error.code).inc()
        logger.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                       offset, reason)
        await self.dead_letters.send(
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
        await self.events.send(key=(event["id"] or "invalid").encode(), value=dumps(event))

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
        if self.app.rebalancing:
            return
        now = now_ms()
        actives = self._active_dbs()
        for token, sent in list(self.inflight.items()):
            if now - sent >= TICK_RETRY_MS:  # the replica it went to may have died: send again
                # The agent may have taken it off meanwhile (this loop awaits sends).
                if self.inflight.pop(token, None) is not None and token[0] in actives:
                    await self._send_tick(token, now)
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
                await self._send_tick((partition, key, timer_id), now)

    async def _send_tick(self, token: tuple[int, bytes, str], now: int) -> None:
        partition, key, timer_id = token
        self.inflight[token] = now
        tick = {"v": 1, "kind": "tick", "id": timer_id}
        await self.calls.send(key=key, value=dumps(tick), partition=partition)


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
