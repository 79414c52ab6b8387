"""The horizon's high watermarks (cfstream.processor.watermarks), across a broker restart.

A restarted broker answers a long-lived admin client's ListOffsets with FENCED_LEADER_EPOCH for
as long as it lives (librdkafka 2.16): due calls on idle partitions then never fired. This pins
that answers come back.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cfstream.clock import now_ms
from cfstream.dev.broker import LocalBroker
from cfstream.kafka.topics import ensure_topics
from cfstream.processor import watermarks as watermarks_module
from cfstream.processor.watermarks import Watermarks
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka


def answer_after(watermarks: Watermarks, partition: int, asked_after: int,
                 timeout: float = 30) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watermarks.want({partition})
        answer = watermarks.answers.get(partition)
        if answer is not None and answer[0] >= asked_after:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"no answer for partition {partition} asked after {asked_after}")


def test_answers_come_back_after_a_broker_restart(tmp_path: Path) -> None:
    with LocalBroker(data_dir=tmp_path / "kafka") as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="wm",
                            partitions=2, kafka_config={"log_level": 2})
        ensure_topics(settings)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        producer.produce(settings.calls_topic, b"{}", b"k", partition=1)
        assert producer.flush(30) == 0
        watermarks = Watermarks(settings)
        try:
            before = int(time.time() * 1000)
            assert answer_after(watermarks, 1, before)[1] == 1
            broker.stop(remove_data=False)
            broker.start()
            restarted = int(time.time() * 1000)
            asked, high = answer_after(watermarks, 1, restarted)
            assert high == 1 and asked >= restarted
        finally:
            watermarks.close()


def test_a_wanted_partition_is_asked_for_round_after_round_until_the_want_lapses(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """One want of partition 1: rounds go on asking for it (each answer asked later than the one
    before) for KEEP_ASKING_MS, and none asks for it after that. Partition 0, wanted first, shows
    that the topic is there and answers come."""
    monkeypatch.setattr(watermarks_module, "KEEP_ASKING_MS", 1_000)
    settings = replace(settings, partitions=2)
    ensure_topics(settings)
    watermarks = Watermarks(settings)
    try:
        answer_after(watermarks, 0, 0)
        watermarks.want({1})
        wanted_by = now_ms()  # want() read the clock before this
        seen: set[int] = set()
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            answer = watermarks.answers.get(1)
            if answer is not None:
                seen.add(answer[0])
            time.sleep(0.01)
        assert len(seen) >= 3, f"partition 1 asked at {sorted(seen)} after one want"
        while now_ms() < wanted_by + 1_500:
            time.sleep(0.05)
        assert watermarks.answers[1][0] <= wanted_by + 1_000
    finally:
        watermarks.close()
