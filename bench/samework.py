"""A raw loop doing a processor replica's Kafka and RocksDB work per call, and nothing else.

The throughput benchmark's raw relay decodes a record and produces it on: one record in, one
out. A replica does more I/O per call, whatever language it is written in:

- it reads the key's slot (one multi-get per partition and batch, from a RocksDB opened with
  the replica's options, :class:`cfstream.processor.db.Databases`);
- it produces a ``scheduled`` event, and a ``deferred`` one for the call it replaces;
- it puts the slot and its due index entry into a WriteBatch;
- it flushes the events, then produces the batch's changelog records and flushes them (the
  changelog goes last), then writes the WriteBatch with the changelog offset.

This loop does that in straight-line Python on the same records, with the replica's producer
settings, DB options and record shapes, plus the least JSON work (decoding each call and the
slot it replaces, encoding the events and the slot), but none of the replica's checks, rules or
bookkeeping: no validation, no modes, no metrics, no commits, no threads of its own. It is a
reference for how much of a replica's time is its I/O, not a ceiling. It also takes full batches
from the start (the replica's first turns are smaller), times from the first record read (the
replica's rate comes from its committed offsets), and does not merge two calls of one key in one
batch into one changelog record, which the benchmark's calls never have (the second call of a
key comes half the topic later).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import rocksdict
from confluent_kafka import KafkaError, Message, Producer

from bench import env
from cfstream.clock import now_ms
from cfstream.kafka.config import producer_config
from cfstream.processor.db import (
    CHANGELOG_OFFSET_KEY,
    WRITE_OPTIONS,
    WRITTEN_MS_KEY,
    Databases,
)
from cfstream.processor.loop import BATCH_MAX
from cfstream.processor.outputs import LINGER_MS
from cfstream.settings import Settings


def same_work_rate(settings: Settings, topic: str, total: int, run: int, state: Path) -> float:
    """calls/s of the loop over ``total`` calls of ``topic``, from the first record read to the
    last batch written."""
    events = env.create_topic(settings, f"{settings.topic_prefix}.samework-events-{run}")
    changelog = env.create_topic(settings, f"{settings.topic_prefix}.samework-changelog-{run}")
    options = {"message.timeout.ms": 0, "linger.ms": LINGER_MS}
    offsets: dict[int, int] = {}
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            offsets[msg.partition() or 0] = msg.offset() or 0

    producer = Producer(producer_config(settings, on_delivery=delivered,
                                        **{**options, "delivery.report.only.error": True}))
    changelog_producer = Producer(producer_config(settings, on_delivery=delivered, **options))
    for warm, topic_warmed in ((producer, events), (changelog_producer, changelog)):
        warm.produce(topic_warmed, b"", b"bench-warm-up")
        warm.flush(30)
    offsets.clear()
    databases = Databases(state, topic)
    dbs: dict[int, Any] = {}
    consumer = env.raw_consumer(settings, topic)
    seen = 0
    started = None
    deadline = time.monotonic() + 300
    try:
        while seen < total and time.monotonic() < deadline:
            messages = consumer.consume(BATCH_MAX, 1.0)
            if messages and started is None:
                started = time.monotonic()
            batches: dict[int, list[Message]] = {}
            for message in messages:
                if message.error() is None:
                    batches.setdefault(message.partition() or 0, []).append(message)
            now = now_ms()
            written = []
            for partition, batch in batches.items():
                db = dbs.get(partition)
                if db is None:
                    db = dbs[partition] = databases.open(partition)
                written.append((db, partition, _apply(batch, db, producer, events, now)))
                seen += len(batch)
            producer.flush()
            for _, partition, (_, records) in written:
                for key, value in records:
                    changelog_producer.produce(changelog, value, key, partition)
            changelog_producer.flush()
            if errors:
                raise RuntimeError(f"same-work loop: {len(errors)} records refused: {errors[0]}")
            for db, partition, (writes, _) in written:  # as PartitionTask.write does
                writes.put(CHANGELOG_OFFSET_KEY, str(offsets.get(partition, -1)).encode())
                writes.put(WRITTEN_MS_KEY, str(now).encode())
                db.write(writes, WRITE_OPTIONS)
        elapsed = time.monotonic() - (started or time.monotonic())
    finally:
        consumer.close()
        for db in dbs.values():
            db.close()
    if seen < total:
        raise RuntimeError(f"same-work loop read only {seen} of {total} records")
    return total / elapsed


def _apply(batch: list[Message], db: Any, producer: Producer, events: str,
           now: int) -> tuple[rocksdict.WriteBatch, list[tuple[bytes, bytes]]]:
    """One partition's calls: their events produced, their slots and due entries put into a
    WriteBatch, their changelog records returned."""
    keys = [b"k:" + (message.key() or b"") for message in batch]
    stored = db.get(keys)
    writes = rocksdict.WriteBatch(raw_mode=True)
    records = []
    for message, slot_key, old in zip(batch, keys, stored, strict=True):
        call = orjson.loads(message.value() or b"")
        call_id, task, defer_key = call["id"], call["task"], call.get("defer_key")
        due = call["submitted_ms"] + (call.get("delay_ms") or 0)
        if old is not None:
            pending = orjson.loads(old)["call"]
            producer.produce(events, orjson.dumps({
                "v": 1, "type": "deferred", "id": pending["id"], "task": pending["task"],
                "defer_key": pending.get("defer_key"), "ts_ms": now, "successor": call_id,
                "reason": "replaced"}), pending["id"].encode())
        producer.produce(events, orjson.dumps({
            "v": 1, "type": "scheduled", "id": call_id, "task": task, "defer_key": defer_key,
            "ts_ms": now, "due_ms": due, "submitted_ms": call["submitted_ms"]}),
            call_id.encode())
        slot = orjson.dumps({"first_ms": call["submitted_ms"], "due_ms": due, "call": call})
        writes.put(slot_key, slot)
        writes.put(b"d:" + due.to_bytes(8, "big") + slot_key[2:], call_id.encode())
        records.append((slot_key, slot))
    return writes, records
