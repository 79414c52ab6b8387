"""Standby copies kept by the restore thread (cfstream.processor.standby), on the broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from stalls import Stalls, first_stalls
from test_changelog import contents, expected, slot

from cfstream.kafka import stall
from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.processor import standby as standby_module
from cfstream.processor import state
from cfstream.processor.db import Databases, changelog_offset, close
from cfstream.processor.restore import Restored, Restorer
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka

Record = tuple[bytes, bytes | None, int]


def send(settings: Settings, partition: int, records: list[tuple[str, bytes | None]],
         offset: int) -> list[Record]:
    """Produce (call key, slot or None) to the changelog; returns them as applied records."""
    producer = Producer(producer_config(settings))
    out = []
    for i, (key, value) in enumerate(records):
        producer.produce(settings.changelog_topic, value, state.slot_key(key.encode()),
                         partition=partition)
        out.append((state.slot_key(key.encode()), value, offset + i))
    assert producer.flush(30) == 0
    return out


def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def restorer(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = replace(settings, partitions=2, state_dir=tmp_path, standby_delay=0.0)
    ensure_topics(settings)
    restorer = Restorer(settings, Databases(tmp_path, settings.calls_topic), lambda p, n: None)
    yield restorer
    restorer.close()


def test_a_standby_copy_follows_its_changelog_and_a_takeover_replays_nothing(
        restorer: Restorer) -> None:
    settings = restorer.settings
    records = send(settings, 1, [("a", slot("a", 100, 1)), ("b", slot("b", 200, 2)),
                                 ("a", slot("a", 300, 3)), ("b", None)], offset=0)
    standbys = restorer.standbys
    standbys.want({1})
    until(lambda: standbys.lags == {1: 0})
    records += send(settings, 1, [("c", slot("c", 50, 4)), ("a", slot("a", 400, 5))], offset=4)
    until(lambda: standbys.lags == {1: 0} and standbys.copies[1].position == 6)
    assert contents(standbys.copies[1].db) == expected(records)

    # The partition comes here: its restore takes the copy and has nothing left to replay.
    restorer.restore(1)
    restored = restorer.results.get(timeout=30)
    assert isinstance(restored, Restored) and restored.db is not None
    assert (restored.source, restored.records) == ("standby", 0)
    assert 1 not in standbys.copies
    assert contents(restored.db) == expected(records)
    assert changelog_offset(restored.db) == 5
    close(restored.db)


def test_a_takeover_replays_at_most_what_the_copy_had_yet_to_read(restorer: Restorer) -> None:
    settings = restorer.settings
    standbys = restorer.standbys
    records = send(settings, 1, [(f"k{i}", slot(f"k{i}", i, i)) for i in range(50)], offset=0)
    standbys.want({1})
    until(lambda: standbys.lags == {1: 0})
    records += send(settings, 1, [(f"k{i}", None) for i in range(20)], offset=50)
    restorer.restore(1)
    restored = restorer.results.get(timeout=30)
    assert isinstance(restored, Restored) and restored.db is not None
    assert restored.source == "standby" and restored.records <= 20
    assert contents(restored.db) == expected(records)
    close(restored.db)


def delayed(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose cold copies wait 2 s, and one changelog record to copy."""
    settings = replace(settings, partitions=2, state_dir=tmp_path, standby_delay=2.0)
    ensure_topics(settings)
    send(settings, 0, [("x", slot("x", 1, 1))], offset=0)
    return settings


def test_copies_no_longer_wanted_close_and_cold_ones_wait(settings: Settings,
                                                          tmp_path: Path) -> None:
    settings = delayed(settings, tmp_path)
    restorer = Restorer(settings, Databases(tmp_path, settings.calls_topic), lambda p, n: None)
    standbys = restorer.standbys
    try:
        began = time.monotonic()
        standbys.want({0})  # nothing on disk: starts after standby_delay
        until(lambda: 0 in standbys.copies)
        assert time.monotonic() - began >= 2.0
        standbys.want(set())
        until(lambda: not standbys.copies)
        # Its DB stayed on disk: wanted again, it is copied at once, from its checkpoint.
        began = time.monotonic()
        standbys.want({0})
        until(lambda: standbys.lags == {0: 0})
        assert time.monotonic() - began < 2.0
    finally:
        restorer.close()


def test_an_empty_db_left_by_a_cancelled_restore_waits_like_none(settings: Settings,
                                                                 tmp_path: Path) -> None:
    settings = delayed(settings, tmp_path)
    databases = Databases(tmp_path, settings.calls_topic)
    close(databases.open(0))  # a DB directory with no table file in it
    assert databases.path(0).exists() and not databases.holds_state(0)
    restorer = Restorer(settings, databases, lambda p, n: None)
    standbys = restorer.standbys
    try:
        began = time.monotonic()
        standbys.want({0})
        until(lambda: 0 in standbys.copies)
        assert time.monotonic() - began >= 2.0
    finally:
        restorer.close()


def test_a_restore_with_no_copy_says_where_its_db_came_from(restorer: Restorer) -> None:
    send(restorer.settings, 1, [("a", slot("a", 1, 1))], offset=0)
    restorer.restore(1)
    cold = restorer.results.get(timeout=30)
    assert isinstance(cold, Restored) and cold.db is not None
    assert (cold.source, cold.records) == ("cold", 1)
    close(cold.db)
    restorer.restore(1)
    disk = restorer.results.get(timeout=30)
    assert isinstance(disk, Restored) and disk.db is not None
    assert (disk.source, disk.records) == ("disk", 0)
    close(disk.db)


def test_dbs_unused_for_a_while_are_deleted(settings: Settings, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from cfstream.processor import standby

    monkeypatch.setattr(standby, "CLEANUP_DELAY", 0.5)
    monkeypatch.setattr(standby, "CLEANUP_INTERVAL", 0.1)
    settings = replace(settings, partitions=2, state_dir=tmp_path, standby_delay=0.0)
    ensure_topics(settings)
    databases = Databases(tmp_path, settings.calls_topic)
    for partition in (0, 1):
        close(databases.open(partition))
    restorer = Restorer(settings, databases, lambda p, n: None)
    try:
        restorer.standbys.want({1})  # copied: kept
        until(lambda: databases.on_disk() == [1])
        began = time.monotonic()
        until(lambda: time.monotonic() - began > 1.0)
        assert databases.on_disk() == [1] and 1 in restorer.standbys.copies
    finally:
        restorer.close()


def test_a_copy_whose_consumer_stopped_fetching_reads_on_with_a_new_one(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka#5153: after a broker restart the copies' consumer can stop fetching for good;
    the copy would fall behind and a takeover replay all of it."""
    monkeypatch.setattr(stall, "STALL_S", 1.0)
    made: list[Consumer] = []
    monkeypatch.setattr(standby_module, "Consumer", first_stalls(made))
    settings = replace(settings, partitions=2, state_dir=tmp_path, standby_delay=0.0)
    ensure_topics(settings)
    restorer = Restorer(settings, Databases(tmp_path, settings.calls_topic), lambda p, n: None)
    standbys = restorer.standbys
    try:
        records = send(settings, 1, [("a", slot("a", 100, 1))], offset=0)
        standbys.want({1})
        until(lambda: 1 in standbys.copies and standbys.copies[1].position == 1)
        records += send(settings, 1, [("b", slot("b", 200, 2)), ("a", None)], offset=1)
        until(lambda: standbys.copies[1].position == 3)  # read by a new consumer
        assert type(made[0]) is Stalls and made[0].stalled and len(made) >= 2
        assert contents(standbys.copies[1].db) == expected(records)
    finally:
        restorer.close()


@pytest.mark.parametrize("failing", ["pause", "resume"])
def test_a_failing_pause_or_resume_of_the_copies_leaves_restores_running(
        restorer: Restorer, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """Pausing the standby copies around a job, or starting them again, fails once: the job
    runs all the same, a failed resume is tried again at once, and the copy follows its
    changelog on (within 10 s: the stall check would take the copies up again only after
    ~25 s)."""
    settings = restorer.settings
    records = send(settings, 1, [("a", slot("a", 100, 1))], offset=0)
    standbys = restorer.standbys
    standbys.want({1})
    until(lambda: standbys.lags == {1: 0})
    real, failures = standbys.pause, [failing]

    def pause(paused: bool) -> None:
        if ("pause" if paused else "resume") in failures:
            failures.clear()
            raise RuntimeError("refused")
        real(paused)

    monkeypatch.setattr(standbys, "pause", pause)
    restorer.restore(0)
    restored = restorer.results.get(timeout=30)
    assert isinstance(restored, Restored) and restored.db is not None
    assert restored.partition == 0
    close(restored.db)
    assert failures == []
    records += send(settings, 1, [("b", slot("b", 200, 2))], offset=1)
    until(lambda: standbys.copies[1].position == 2, timeout=10)
    assert contents(standbys.copies[1].db) == expected(records)
