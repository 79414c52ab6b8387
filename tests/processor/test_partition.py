"""A calls partition's task on a real RocksDB (cfstream.processor.partition), driven as the loop
drives it: records in offset order, then fire, stage, and a write once the broker has the batch
(here: at once). The loop writes a batch turns later (``overlapped``); most tests write it at
once (``turn``), to look at the DB."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfstream.codec import dumps
from cfstream.ids import new_execution_id
from cfstream.processor import changelog, partition, state
from cfstream.processor.partition import (
    FIRED_RETENTION_MS,
    MAX_ENTRIES_PER_BATCH,
    SCAN_KEPT_MS,
    SCAN_RETRY_MS,
    PartitionTask,
)
from cfstream.wire import Call, Control, Modes

T0 = 1_800_000_000_000
Records = list[tuple[bytes, Any]]


def call(submitted: int, delay: int = 1_000, key: str | None = "k", args: Any = None) -> Call:
    return Call(id=new_execution_id(submitted), task="tests:notify", args=args or [],
                kwargs={}, submitted_ms=submitted, delay_ms=delay, defer_key=key)


def turn(task: PartitionTask, records: list[Call | tuple[bytes, Any]], now: int,
         horizon: int | None = None) -> None:
    """One turn of the loop for this partition; ``horizon`` as the broker would prove it."""
    apply_and_fire(task, records, now, horizon)
    task.stage()
    task.write(task.position)


def overlapped(task: PartitionTask, records: list[Call | tuple[bytes, Any]], now: int,
               horizon: int | None = None, depth: int = 1) -> None:
    """A turn as the loop takes it: a batch is written only once ``depth`` later ones are
    staged (the broker had its records meanwhile)."""
    apply_and_fire(task, records, now, horizon)
    task.stage()
    while len(task.staged) > depth:
        task.write(None)


def apply_and_fire(task: PartitionTask, records: list[Call | tuple[bytes, Any]], now: int,
                   horizon: int | None) -> None:
    for record in records:
        key, value = ((record.key.encode(), record.to_dict()) if isinstance(record, Call)
                      else record)
        raw = value if isinstance(value, bytes) else dumps(value)
        task.process(key, raw, task.position, None, now)
    if horizon is not None:
        task.horizon_ms = max(task.horizon_ms, horizon)
    task.fire_read(now)
    task.fire_due(now)


def fired(task: PartitionTask) -> list[str]:
    outputs: Any = task.outputs
    return [e["id"] for e in outputs.values(task.settings.executions_topic)]


def events(task: PartitionTask, type_: str) -> list[dict[str, Any]]:
    return [e for e in task.outputs.values(task.settings.events_topic)  # type: ignore[attr-defined]
            if e["type"] == type_]


def index(task: PartitionTask) -> list[tuple[int, bytes]]:
    it = task.db.iter()
    it.seek(state.DUE_PREFIX)
    found = []
    while it.valid() and it.key().startswith(state.DUE_PREFIX):
        found.append(state.parse_due_key(it.key()))
        it.next()
    return found


def test_a_due_call_waits_for_the_horizon_then_fires_once(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    c = call(T0)
    turn(task, [c], now=T0 + 5)
    assert fired(task) == [] and index(task) == [(T0 + 1_000, b"tests:notify|k")]
    turn(task, [], now=T0 + 1_010, horizon=T0 + 999)  # due, but not read up to the due time
    assert fired(task) == []
    turn(task, [], now=T0 + 1_020, horizon=T0 + 1_015)
    assert fired(task) == [c.id]
    execution = task.outputs.values(task.settings.executions_topic)[0]  # type: ignore[attr-defined]
    assert (execution["due_ms"], execution["fired_ms"]) == (T0 + 1_000, T0 + 1_020)
    # The slot is now a marker, due when it is forgotten.
    assert index(task) == [(T0 + 1_020 + FIRED_RETENTION_MS, b"tests:notify|k")]
    turn(task, [], now=T0 + 5_000, horizon=T0 + 5_000)
    assert fired(task) == [c.id]


def test_a_call_made_before_the_due_time_replaces_the_pending_one_even_read_after_it(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    first, second = call(T0), call(T0 + 900)
    turn(task, [first], now=T0 + 5)
    # The newer call is read only after the first one's due time: the horizon has not passed
    # the due time before it was read, so the first never fired.
    turn(task, [second], now=T0 + 1_500, horizon=T0 + 1_400)
    assert fired(task) == []
    assert [e["successor"] for e in events(task, "deferred")] == [second.id]
    turn(task, [], now=T0 + 1_950, horizon=T0 + 1_950)
    assert fired(task) == [second.id]


def test_a_call_read_while_others_fire_in_the_same_turn_fires_on_time(
        partition_task: Callable[..., PartitionTask]) -> None:
    """The lost-timer case: calls for other keys arrive in the turn whose timer fires a batch of
    due calls; each fires at its own due time, none is skipped or fired twice."""
    task = partition_task()
    early = [call(T0 + i, key=f"early-{i}") for i in range(50)]
    turn(task, early, now=T0 + 60)
    late = [call(T0 + 1_000 + i, delay=500, key=f"late-{i}") for i in range(50)]
    turn(task, late, now=T0 + 1_060, horizon=T0 + 1_060)  # fires early-*, takes late-* in
    assert sorted(fired(task)) == sorted(c.id for c in early)
    turn(task, [], now=T0 + 1_520, horizon=T0 + 1_520)
    assert len(fired(task)) == 50 + 21
    turn(task, [], now=T0 + 1_600, horizon=T0 + 1_600)
    assert sorted(fired(task)) == sorted(c.id for c in early + late)


def test_calls_without_delay_fire_when_read_without_waiting_for_the_horizon(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    burst = [call(T0 + i, delay=0) for i in range(3)]
    # Nothing could replace them in time; merging them is the worker backlog's job.
    turn(task, burst, now=T0 + 10)
    assert fired(task) == [c.id for c in burst]
    alone = call(T0 + 20, delay=0, key=None)
    turn(task, [alone], now=T0 + 21)
    assert fired(task) == [c.id for c in burst] + [alone.id]


def test_records_read_again_after_a_seek_are_skipped(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    c = call(T0, delay=0, key=None)
    raw = dumps(c.to_dict())
    task.process(c.key.encode(), raw, 0, None, T0)
    task.process(c.key.encode(), raw, 0, None, T0)
    assert task.position == 1
    task.fire_read(T0)
    assert fired(task) == [c.id]


def test_stale_index_entries_are_dropped_without_firing(
        partition_task: Callable[..., PartitionTask]) -> None:
    """A restore writes an index entry per changelog record, older versions included."""
    task = partition_task()
    c = call(T0, delay=10_000)
    turn(task, [c], now=T0)
    task.db.put(state.due_key(T0 + 100, b"tests:notify|k"), c.id.encode())  # an older slot's
    task.db.put(state.due_key(T0 + 200, b"gone"), b"x")  # a key deleted since
    task.next_due = 0
    turn(task, [], now=T0 + 300, horizon=T0 + 300)
    assert fired(task) == []
    assert index(task) == [(T0 + 10_000, b"tests:notify|k")]


def test_a_replaced_calls_entry_waits_for_its_due_time_and_is_dropped_then(
        partition_task: Callable[..., PartitionTask]) -> None:
    """Deleting it at once would leave a tombstone that every scan until then walks over."""
    task = partition_task()
    first, second = call(T0), call(T0 + 500)
    turn(task, [first], now=T0 + 1)
    turn(task, [second], now=T0 + 501, horizon=T0 + 501)
    assert index(task) == [(T0 + 1_000, b"tests:notify|k"), (T0 + 1_500, b"tests:notify|k")]
    turn(task, [], now=T0 + 1_100, horizon=T0 + 1_100)
    assert fired(task) == [] and index(task) == [(T0 + 1_500, b"tests:notify|k")]
    assert task.cursor == T0 + 1_101
    turn(task, [], now=T0 + 1_600, horizon=T0 + 1_600)
    assert fired(task) == [second.id]


def test_the_timer_s_kept_iterator_sees_what_was_written_behind_it(
        partition_task: Callable[..., PartitionTask]) -> None:
    """While timers keep coming due, the timer seeks with the iterator of its last turn: a timer
    written since, due before where that iterator stopped, still fires, also after the DB flushed
    its memtable to a file; unused for SCAN_KEPT_MS, the iterator is let go."""
    task = partition_task()
    a, b = call(T0, delay=1_000, key="a"), call(T0, delay=9_000, key="b")
    turn(task, [a, b], now=T0, horizon=T0)
    turn(task, [], now=T0 + 1_000, horizon=T0 + 1_000)
    kept = task.scan
    assert fired(task) == [a.id] and kept is not None  # it stopped at b's entry
    c = call(T0 + 1_100, delay=1_000, key="c")
    turn(task, [c], now=T0 + 1_100, horizon=T0 + 1_100)
    turn(task, [], now=T0 + 2_100, horizon=T0 + 2_100)
    assert fired(task) == [a.id, c.id] and task.scan is kept
    d = call(T0 + 2_200, delay=1_000, key="d")
    turn(task, [d], now=T0 + 2_200, horizon=T0 + 2_200)
    task.db.flush()  # d's entry now lies in a level-0 file made after the iterator
    turn(task, [], now=T0 + 3_200, horizon=T0 + 3_200)
    assert fired(task) == [a.id, c.id, d.id] and task.scan is kept
    turn(task, [], now=T0 + 3_200 + SCAN_KEPT_MS - 1, horizon=T0 + 4_000)
    assert task.scan is kept
    turn(task, [], now=T0 + 3_200 + SCAN_KEPT_MS, horizon=T0 + 4_000)
    assert task.scan is None
    turn(task, [], now=T0 + 9_000, horizon=T0 + 9_000)
    assert fired(task) == [a.id, c.id, d.id, b.id]


def test_a_db_started_over_fires_its_timers_without_the_tailing_iterator(
        partition_task: Callable[..., PartitionTask]) -> None:
    """A DB that starts over (changelog.clear) holds a range deletion, which RocksDB's tailing
    iterator does not support: the timer takes a plain iterator each turn, and fires the same."""
    task = partition_task()
    gone = call(T0, delay=1_000, key="gone")
    turn(task, [gone], now=T0, horizon=T0)
    changelog.clear(task.db)
    task.scan, task.next_due, task.cursor = None, 0, 0  # as a task opened on the DB now
    c = call(T0 + 100, delay=1_000, key="c")
    turn(task, [c], now=T0 + 100, horizon=T0 + 100)
    turn(task, [], now=T0 + 1_100, horizon=T0 + 1_100)
    assert fired(task) == [c.id]
    assert not task.tailing and task.scan is None


def test_a_turn_takes_at_most_its_share_of_stale_entries_too(
        partition_task: Callable[..., PartitionTask]) -> None:
    """Entries dropped as stale count toward MAX_ENTRIES_PER_BATCH like fired ones: a scan over
    many of them (deleted keys seen again) must not stall the replica's loop in one turn."""
    task = partition_task()
    for i in range(MAX_ENTRIES_PER_BATCH + 10):
        task.db.put(state.due_key(T0 + 100, f"gone{i:05}".encode()), b"x")
    c = call(T0, delay=500, key="c")
    turn(task, [c], now=T0, horizon=T0)
    task.next_due = 0
    turn(task, [], now=T0 + 600, horizon=T0 + 600)
    assert fired(task) == [] and task.next_due == T0 + 100  # more to take, at once
    turn(task, [], now=T0 + 601, horizon=T0 + 601)
    assert fired(task) == [c.id]


def test_a_failed_scan_is_tried_again_later_and_fires_nothing_twice(
        partition_task: Callable[..., PartitionTask], monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain iterator's error (not a range deletion) ends the scan: the cursor stays, the scan
    runs again SCAN_RETRY_MS later, and what the failed one fired is not fired again."""
    task = partition_task()
    task.tailing = False
    c = call(T0, delay=500, key="c")
    turn(task, [c], now=T0, horizon=T0)
    scan = task._due_scan

    class FailingAfterOne:  # RocksDB's iterator turning invalid on an I/O error mid-scan
        def __init__(self, now: int) -> None:
            self.it, self.left = scan(now), 1

        def valid(self) -> bool:
            return self.left > 0 and self.it.valid()

        def key(self) -> bytes:
            return self.it.key()

        def value(self) -> bytes:
            return self.it.value()

        def next(self) -> None:
            self.left -= 1
            self.it.next()

    cursor = task.cursor
    monkeypatch.setattr(task, "_due_scan", FailingAfterOne)
    monkeypatch.setattr(partition, "_error", lambda it: Exception("IO error: disk full"))
    turn(task, [], now=T0 + 600, horizon=T0 + 600)  # fires c, then its iterator fails
    assert fired(task) == [c.id]
    monkeypatch.undo()
    assert task.next_due == T0 + 600 + SCAN_RETRY_MS and task.cursor == cursor
    turn(task, [], now=T0 + 600 + SCAN_RETRY_MS, horizon=T0 + 600 + SCAN_RETRY_MS)
    assert fired(task) == [c.id]
    assert task.next_due == T0 + 600 + FIRED_RETENTION_MS  # the marker's, c's entry dropped


def test_a_cancel_drops_the_pending_call(partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    c = call(T0)
    turn(task, [c, (c.key.encode(), Control("cancel", c.id, "no").to_dict())], now=T0 + 1)
    turn(task, [], now=T0 + 2_000, horizon=T0 + 2_000)
    assert fired(task) == [] and [e["id"] for e in events(task, "cancelled")] == [c.id]


def test_only_the_batch_changes_reach_the_changelog_once_per_key(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    calls = [call(T0 + i) for i in range(10)]
    turn(task, calls, now=T0 + 20)
    changelog = task.outputs.of("changelog")  # type: ignore[attr-defined]
    assert [item["key"] for item in changelog] == [b"k:tests:notify|k"]
    assert state.decode_slot(changelog[0]["value"]).call == calls[-1]  # type: ignore[union-attr]
    assert all(item["partition"] == 0 for item in changelog)


def test_a_batch_applied_over_an_unwritten_one_reads_its_slots(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    first, second = call(T0), call(T0 + 100)
    overlapped(task, [first], now=T0 + 5)
    assert task.persisted == 0 and index(task) == []  # staged, not written
    overlapped(task, [second], now=T0 + 105)  # writes the first batch after reading its slot
    assert [e["successor"] for e in events(task, "deferred")] == [second.id]
    assert task.persisted == 1 and index(task) == [(T0 + 1_000, b"tests:notify|k")]


def test_reads_see_every_batch_not_yet_written_the_latest_first(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    calls = [call(T0 + 10 * i, key="k" if i % 2 == 0 else "j") for i in range(4)]
    for i, c in enumerate(calls):
        overlapped(task, [c], now=T0 + 10 * i + 1, depth=3)
    assert len(task.staged) == 3 and task.persisted == 1  # k's first call written, no more
    # Each call replaced the one before it on its key, read from an unwritten batch.
    assert [(e["id"], e["successor"]) for e in events(task, "deferred")] == [
        (calls[0].id, calls[2].id), (calls[1].id, calls[3].id)]
    while task.staged:
        task.write(None)
    assert task.persisted == 4
    for key, latest in ((b"tests:notify|k", calls[2]), (b"tests:notify|j", calls[3])):
        slot = state.decode_slot(task.db.get(state.slot_key(key)))
        assert slot is not None and slot.call == latest


def test_the_timer_never_passes_an_entry_of_the_unwritten_batch(
        partition_task: Callable[..., PartitionTask]) -> None:
    """A call due before its batch is written fires in the turn after the write, not never: the
    timer's scan cannot see the entry before then, so it must not move its cursor past it."""
    task = partition_task()
    other, short = call(T0, delay=5, key="other"), call(T0, delay=10, key="short")
    turn(task, [other], now=T0 + 1)
    overlapped(task, [short], now=T0 + 2)  # staged, due at T0 + 10
    overlapped(task, [], now=T0 + 20, horizon=T0 + 20)  # fires other; short's entry unwritten
    assert fired(task) == [other.id]
    assert task.cursor <= T0 + 10 and task.next_due <= T0 + 10
    overlapped(task, [], now=T0 + 21, horizon=T0 + 21)
    assert fired(task) == [other.id, short.id]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400), st.integers(0, 300),
                          st.integers(0, 400)), min_size=1, max_size=30),
       st.sampled_from([turn, overlapped, functools.partial(overlapped, depth=3)]))
def test_every_call_fires_once_or_is_replaced(
        partition_task: Callable[..., PartitionTask],
        steps: list[tuple[int, int, int, int]], driven: Callable[..., None]) -> None:
    """Whatever the turns and horizons, and whether a batch is written at once or turns later:
    each key's calls end as exactly one execution of its latest call per quiet period, and
    nothing fires before its due time or the horizon."""
    task = partition_task()
    now, made = T0, []
    for key, gap, delay, read_after in steps:
        now += gap
        c = call(now, delay=delay, key=f"u{key}")
        made.append(c)
        driven(task, [c], now=now + read_after, horizon=now + read_after)
        now += read_after
    for _ in range(4):  # (the last ones write what the first staged)
        driven(task, [], now=now + 10_000, horizon=now + 10_000)
    executions = task.outputs.values(task.settings.executions_topic)  # type: ignore[attr-defined]
    ids = [e["id"] for e in executions]
    assert len(ids) == len(set(ids))
    deferred = {e["id"] for e in events(task, "deferred")}
    assert set(ids) | deferred == {c.id for c in made}
    assert not set(ids) & deferred
    for e in executions:
        assert e["fired_ms"] >= e["due_ms"]


def test_a_leading_call_fires_when_read_and_the_next_ones_wait_for_a_trailing_run(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    first, *rest = [dataclasses.replace(call(T0 + i * 100), modes=Modes(leading=True))
                    for i in range(3)]
    # Read in one turn with the two after it: the leading one still runs, at once.
    turn(task, [first, *rest], now=T0 + 250)
    assert fired(task) == [first.id]
    execution = task.outputs.values(task.settings.executions_topic)[0]  # type: ignore[attr-defined]
    assert execution["due_ms"] == T0 and execution["leading"] is True and execution["v"] == 2
    assert [e["successor"] for e in events(task, "deferred")] == [rest[1].id]
    turn(task, [], now=T0 + 1_199, horizon=T0 + 1_199)
    assert fired(task) == [first.id]
    turn(task, [], now=T0 + 1_210, horizon=T0 + 1_210)
    assert fired(task) == [first.id, rest[1].id]


def test_keep_first_runs_the_first_call_once_the_last_has_had_its_quiet_period(
        partition_task: Callable[..., PartitionTask]) -> None:
    task = partition_task()
    calls = [dataclasses.replace(call(T0 + i * 100, args=[i]), modes=Modes(keep="first"))
             for i in range(3)]
    turn(task, calls, now=T0 + 250)
    assert [(e["id"], e["successor"], e["reason"]) for e in events(task, "deferred")] == [
        (c.id, calls[0].id, "kept_first") for c in calls[1:]]
    turn(task, [], now=T0 + 1_150, horizon=T0 + 1_150)  # the first call's own due time passed
    assert fired(task) == []
    turn(task, [], now=T0 + 1_210, horizon=T0 + 1_210)
    assert fired(task) == [calls[0].id]
    execution = task.outputs.values(task.settings.executions_topic)[0]  # type: ignore[attr-defined]
    assert (execution["args"], execution["due_ms"]) == ([0], T0 + 1_200)
