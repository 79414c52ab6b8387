"""Restoring a partition's DB from its changelog (cfstream.processor.restore), on the broker."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from test_changelog import slot

from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.processor import state
from cfstream.processor.db import CHANGELOG_OFFSET_KEY, Databases, changelog_offset
from cfstream.processor.restore import Counted, PartitionJob, Restored, Restorer
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka


def send(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in records:
        producer.produce(settings.changelog_topic, value, key, partition=1)
    assert producer.flush(30) == 0


def result(restorer: Restorer) -> Restored | Counted:
    return restorer.results.get(timeout=60)


def test_restore_applies_the_changelog_indexes_it_and_resumes_from_its_offset(
        settings: Settings, tmp_path: Path) -> None:
    settings = replace(settings, partitions=2, state_dir=tmp_path)
    ensure_topics(settings)
    send(settings, [(b"k:a", slot("a", 100)), (b"k:b", slot("b", 200)),
                    (b"k:a", slot("a", 300)), (b"k:c", slot("c", 400, pending=False)),
                    (b"k:b", None)])
    databases = Databases(tmp_path, settings.calls_topic)
    progress: list[tuple[int, int]] = []
    restorer = Restorer(settings, databases, lambda p, n: progress.append((p, n)))
    try:
        restorer.restore(1)
        restored = result(restorer)
        assert isinstance(restored, Restored) and restored.db is not None
        assert restored.records == 5
        db = restored.db
        assert {k for k in db.keys() if k.startswith(state.SLOT_PREFIX)} == {b"k:a", b"k:c"}
        assert changelog_offset(db) == 4
        # Every restored slot has its index entry; older versions' entries are left to the timer.
        due = {state.parse_due_key(k) for k in db.keys() if k.startswith(state.DUE_PREFIX)}
        assert {(300, b"a"), (400, b"c")} <= due
        restorer.count(1, db.snapshot())
        assert result(restorer) == Counted(1, 1)
        db.close()

        # A restart reads only what came after the offset it holds.
        send(settings, [(b"k:c", None), (b"k:d", slot("d", 500))])
        restorer.restore(1)
        again = result(restorer)
        assert isinstance(again, Restored) and again.db is not None and again.records == 2
        assert {k for k in again.db.keys() if k.startswith(state.SLOT_PREFIX)} == {b"k:a", b"k:d"}
        again.db.close()
        assert progress[-1] == (1, 0)
    finally:
        restorer.close()


def test_a_db_ahead_of_its_changelog_starts_over(settings: Settings, tmp_path: Path) -> None:
    """The changelog was recreated (a broker's data wiped): the DB must not keep old calls."""
    settings = replace(settings, partitions=2, state_dir=tmp_path)
    ensure_topics(settings)
    databases = Databases(tmp_path, settings.calls_topic)
    db = databases.open(1)
    db.put(b"k:old", slot("old", 1))
    db.put(CHANGELOG_OFFSET_KEY, b"999")
    db.close()
    send(settings, [(b"k:new", slot("new", 2))])
    restorer = Restorer(settings, databases, lambda p, n: None)
    try:
        restorer.restore(1)
        restored = result(restorer)
        assert isinstance(restored, Restored) and restored.db is not None
        assert {k for k in restored.db.keys() if k.startswith(state.SLOT_PREFIX)} == {b"k:new"}
        restored.db.close()
    finally:
        restorer.close()


def test_a_state_dir_serves_one_replica(tmp_path: Path) -> None:
    from cfstream.errors import ConfigurationError

    first = Databases(tmp_path, "t.calls")
    with pytest.raises(ConfigurationError, match="own CFSTREAM_STATE_DIR"):
        Databases(tmp_path, "t.calls")
    assert first.root.is_dir()


def test_a_cancelled_restore_hands_nothing_over(settings: Settings, tmp_path: Path) -> None:
    settings = replace(settings, partitions=2, state_dir=tmp_path)
    ensure_topics(settings)
    restorer = Restorer(settings, Databases(tmp_path, settings.calls_topic), lambda p, n: None)
    try:
        restorer.restore(1)
        restorer.cancel(1)  # returns once the job no longer touches the DB
        try:
            late = restorer.results.get(timeout=1)
        except queue.Empty:
            return
        # It may have finished before the cancel: then it handed over a whole DB.
        assert isinstance(late, Restored) and late.db is not None
        late.db.close()
    finally:
        restorer.close()


def test_cancelling_a_queued_job_does_not_wait_for_the_jobs_ahead(
        settings: Settings, tmp_path: Path) -> None:
    """A revocation cancels jobs from the loop: waiting behind another partition's restore
    would stall every partition the replica keeps."""
    settings = replace(settings, partitions=2, state_dir=tmp_path)
    ensure_topics(settings)
    restorer = Restorer(settings, Databases(tmp_path, settings.calls_topic), lambda p, n: None)
    gate = threading.Event()
    restorer.jobs.put(PartitionJob(-1, "count", snapshot=_Blocking(gate)))  # holds the thread
    try:
        restorer.restore(0)
        began = time.monotonic()
        restorer.cancel(0)
        assert time.monotonic() - began < 1
    finally:
        gate.set()
        restorer.close()
    assert restorer.results.empty()


class _Blocking:
    """A snapshot whose iteration waits for ``gate``."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def iter(self) -> Any:
        self.gate.wait(30)
        raise RuntimeError("done blocking")
