"""Restoring a newly active table partition from its changelog with librdkafka, before faust does.

faust restores a table partition record by record through its stream machinery, about 10k
records/s here: a fresh replica took minutes for 1M pending keys. This store, faust's RocksDB
store otherwise, reads a newly assigned active partition's changelog from the offset its RocksDB
holds to the end with a confluent consumer, writes it in WriteBatches, and records the offset
where faust's recovery reads it; faust then finds nothing (or only what arrived meanwhile) left
to read. Standby partitions keep faust's own restore, which runs in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import rocksdict
from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore

from cfstream.kafka.config import consumer_config
from cfstream.processor.store import FAUST_OFFSET_KEY
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# The store URL scheme the processor's faust app uses (see faust_config.app_options).
SCHEME = "cfstream"
STORES.aliases[SCHEME] = f"{__name__}:Store"
BATCH_RECORDS = 5_000
POLL_TIMEOUT = 1.0
# Give up (and leave the rest to faust's restore) if the changelog stops answering this long.
STALL_TIMEOUT = 30.0

_settings: Settings | None = None


def configure(settings: Settings) -> None:
    """The connection settings the store reads changelogs with (set by the processor)."""
    global _settings
    _settings = settings


class Store(RocksDBStore):
    async def assign_partitions(self, table: Any, tps: set[Any], generation_id: int = 0) -> None:
        await super().assign_partitions(table, tps, generation_id)
        if _settings is None or generation_id != self.app.consumer_generation_id:
            return
        standbys = self.app.assignor.assigned_standbys()
        dbs = {tp.partition: self._dbs[tp.partition] for tp in tps
               if tp.topic in table.changelog_topic.topics and tp not in standbys
               and tp.partition in self._dbs}
        if dbs:
            await asyncio.get_running_loop().run_in_executor(
                None, restore_partitions, _settings, dbs, table.changelog_topic.get_topic_name())


def restore_partitions(settings: Settings, dbs: dict[int, Any], topic: str) -> int:
    """Apply each partition of ``topic`` to its DB in ``dbs``, from the offset after the one the
    DB holds to the end; the number of records applied."""
    consumer = Consumer(consumer_config(settings, None, **{
        "enable.partition.eof": True,
        "queued.max.messages.kbytes": 16_384,  # the prefetch stays small beside the DBs
    }))
    started, applied = time.monotonic(), 0
    try:
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for partition, db in dbs.items():
            held = db.get(FAUST_OFFSET_KEY)
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=10)
            start = max(int(held) + 1 if held is not None else 0, low)
            if start < high:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, start))
        if not starts:
            return 0
        consumer.assign(starts)
        applied = _apply_until(consumer, dbs, ends)
    finally:
        consumer.close()
    logger.info("%s: restored %d changelog records to partitions %s in %.1fs", topic, applied,
                sorted(dbs), time.monotonic() - started)
    return applied


def _apply_until(consumer: Consumer, dbs: dict[int, Any], ends: dict[int, int]) -> int:
    """Consume until every partition in ``ends`` reached its end offset (or went silent)."""
    applied, quiet_since = 0, time.monotonic()
    left = set(ends)
    while left:
        records = consumer.consume(BATCH_RECORDS, POLL_TIMEOUT)
        if not records:
            if time.monotonic() - quiet_since > STALL_TIMEOUT:
                logger.warning("changelog partitions %s silent for %.0fs; faust's restore "
                               "reads the rest", sorted(left), STALL_TIMEOUT)
                break
            continue
        quiet_since = time.monotonic()
        batches: dict[int, Any] = {}
        last: dict[int, int] = {}
        for record in records:
            partition = record.partition()
            if partition is None or partition not in left:
                continue
            error = record.error()
            if error is not None:  # the end of the partition, or an error it retries
                if error.code() == KafkaError._PARTITION_EOF:
                    left.discard(partition)
                continue
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
            key, value = record.key() or b"", record.value()
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            offset = record.offset()
            if offset is not None:
                last[partition] = offset
                if offset >= ends[partition] - 1:
                    left.discard(partition)
            applied += 1
        for partition, batch in batches.items():
            if partition in last:
                batch.put(FAUST_OFFSET_KEY, str(last[partition]).encode())
            dbs[partition].write(batch)
    return applied
