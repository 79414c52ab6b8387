"""Restoring a table partition from its changelog with librdkafka (cfstream.processor.restore)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cfstream.kafka.config import producer_config
from cfstream.processor.restore import restore_partitions
from cfstream.processor.store import FAUST_OFFSET_KEY
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka


def send(settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in records:
        producer.produce(topic, value, key, partition=1)
    assert producer.flush(30) == 0


def test_restore_applies_puts_and_deletes_and_resumes_from_the_offset_it_holds(
        settings: Settings, admin: AdminClient, create_topics: Callable[..., Any],
        tmp_path: Path) -> None:
    topic = f"{settings.topic_prefix}.changelog"
    create_topics(admin, [topic], partitions=2, config={"cleanup.policy": "compact"})
    send(settings, topic, [(b"k:a", b"1"), (b"k:b", b"2"), (b"k:a", b"3"), (b"k:c", b"4"),
                           (b"k:b", None)])
    db = rocksdict.Rdict(str(tmp_path / "db"), rocksdict.Options(raw_mode=True))
    empty = rocksdict.Rdict(str(tmp_path / "empty"), rocksdict.Options(raw_mode=True))
    try:
        assert restore_partitions(settings, {0: empty, 1: db}, topic) == 5
        assert dict(db.items()) == {b"k:a": b"3", b"k:c": b"4", FAUST_OFFSET_KEY: b"4"}
        assert dict(empty.items()) == {}

        # Later records only: what the DB holds already is not read again.
        send(settings, topic, [(b"k:c", None), (b"k:d", b"5")])
        assert restore_partitions(settings, {1: db}, topic) == 2
        assert dict(db.items()) == {b"k:a": b"3", b"k:d": b"5", FAUST_OFFSET_KEY: b"6"}
        assert restore_partitions(settings, {0: empty, 1: db}, topic) == 0
    finally:
        db.close()
        empty.close()
