"""``if_running="after"`` in the rules: a key's calls wait while its execution runs, and
collapse into one run after it ends (a worker's ``finished`` record, or a retry, ends it)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_calls import DELAY, RETENTION, make_call

from cfstream.scheduling import rules
from cfstream.scheduling.rules import RUNNING_RECHECK_MS, Slot, accept, finished, tick
from cfstream.wire import Call


def after(call_id: str, submitted_ms: int, **fields: Any) -> Call:
    return make_call(call_id, submitted_ms, **{"if_running": "after", **fields})


def running_a(if_running: str = "after") -> Slot:
    """Key "k" after "a" (made at 0) fired at 1000: it runs, as far as the processor knows."""
    slot = accept(None, after("a", 0, if_running=if_running), 0, RETENTION).slot
    fired = tick(slot, "a", DELAY, RETENTION)
    assert [e.call.id for e in fired.executions] == ["a"] and fired.slot is not None
    return fired.slot


def test_a_fired_call_leaves_its_key_running() -> None:
    slot = running_a()
    assert slot.call is None and slot.running_id == "a" and slot.running_attempt == 1


def test_a_call_due_while_the_key_runs_waits_and_fires_just_after_the_run_ends() -> None:
    b = accept(running_a(), after("b", 1_500), 1_500, RETENTION)
    assert b.slot is not None and b.slot.held and b.slot.due_ms == 2_500
    scheduled = b.events[-1]
    assert scheduled["type"] == "scheduled" and scheduled["after"] == "a"
    waiting = tick(b.slot, "b", 2_500, RETENTION)
    assert waiting.executions == [] and not waiting.changed
    ended = finished(b.slot, "a", 1, 4_000)
    assert ended.slot is not None and not ended.slot.held and ended.slot.due_ms == 4_001
    fired = tick(ended.slot, "b", 4_001, RETENTION)
    assert [(e.call.id, e.due_ms, e.fired_ms) for e in fired.executions] == [("b", 4_001, 4_001)]
    assert fired.slot is not None and fired.slot.running_id == "b"


def test_a_run_that_ends_before_the_quiet_period_does_not_bring_it_forward() -> None:
    b = accept(running_a(), after("b", 1_500), 1_500, RETENTION)
    ended = finished(b.slot, "a", 1, 1_800)
    assert ended.slot is not None and ended.slot.due_ms == 2_500
    assert tick(ended.slot, "b", 2_499, RETENTION).executions == []
    assert [e.call.id for e in tick(ended.slot, "b", 2_500, RETENTION).executions] == ["b"]


def test_calls_while_it_runs_collapse_into_one_run_with_the_latest_arguments() -> None:
    slot = running_a()
    for i, at in enumerate((1_100, 1_200, 1_300)):
        decision = accept(slot, after(f"b{i}", at), at, RETENTION)
        slot = decision.slot
    assert [(e["type"], e["id"]) for e in decision.events] == [("deferred", "b1"),
                                                                ("scheduled", "b2")]
    assert decision.events[0]["successor"] == "b2"
    ended = finished(slot, "a", 1, 9_000).slot
    fired = tick(ended, "b2", 9_001, RETENTION)
    assert [e.call.args for e in fired.executions] == [["b2"]]


def test_by_default_a_call_runs_at_its_due_time_beside_the_running_one() -> None:
    slot = running_a(if_running="concurrent")
    assert slot.running_id is None
    b = accept(slot, after("b", 1_500, if_running="concurrent"), 1_500, RETENTION)
    assert [e.call.id for e in tick(b.slot, "b", 2_500, RETENTION).executions] == ["b"]


def test_a_finished_record_of_another_execution_or_attempt_changes_nothing() -> None:
    b = accept(running_a(), after("b", 1_500), 1_500, RETENTION).slot
    assert not finished(b, "b", 1, 4_000).changed  # not the running one
    assert not finished(None, "a", 1, 4_000).changed
    retried = Slot(call=None, first_ms=0, due_ms=9_000, fired_id="a", fired_submitted_ms=0,
                   fired_attempt=2, running_id="a", running_attempt=2)
    assert not finished(retried, "a", 1, 4_000).changed  # the first attempt's, replayed


def test_a_retry_of_the_running_call_ends_its_run() -> None:
    # Nothing else came: the retry is the key's next run, at its not_before time.
    retry = accept(running_a(), after("a", 0, attempt=2, not_before_ms=3_000), 2_000, RETENTION)
    assert retry.slot is not None and retry.slot.call is not None
    assert retry.slot.running_id is None and retry.slot.due_ms == 3_000
    fired = tick(retry.slot, "a", 3_000, RETENTION)
    assert [e.call.attempt for e in fired.executions] == [2]
    assert fired.slot is not None and (fired.slot.running_id, fired.slot.running_attempt) == ("a", 2)


def test_a_retry_older_than_the_held_call_ends_the_run_and_follows_that_call() -> None:
    held = accept(running_a(), after("b", 1_500), 1_500, RETENTION).slot
    retry = accept(held, after("a", 0, attempt=2, not_before_ms=3_000), 3_000, RETENTION)
    assert retry.changed and [(e["type"], e["id"], e["successor"]) for e in retry.events] == [
        ("deferred", "a", "b")]
    assert retry.slot is not None and not retry.slot.held and retry.slot.due_ms == 3_001


def test_a_running_key_is_not_forgotten_when_its_marker_expires() -> None:
    slot = running_a()
    later = tick(slot, "a", slot.due_ms, RETENTION)
    assert later.changed and later.slot is not None and later.slot.running_id == "a"
    assert later.slot.due_ms == slot.due_ms + max(RETENTION, RUNNING_RECHECK_MS)
    ended = finished(later.slot, "a", 1, later.slot.due_ms + 1).slot
    assert tick(ended, "a", ended.due_ms, RETENTION).slot is None  # now it may go


def test_a_running_key_is_remembered_without_retention() -> None:
    slot = accept(None, after("a", 0), 0, retention_ms=0).slot
    fired = tick(slot, "a", DELAY, retention_ms=0)
    assert fired.slot is not None and fired.slot.running_id == "a"


def test_cancelling_the_held_call_keeps_the_key_running() -> None:
    held = accept(running_a(), after("b", 1_500), 1_500, RETENTION).slot
    cancelled = rules.cancel(held, "b", 1_600, RETENTION)
    assert cancelled.slot is not None and cancelled.slot.call is None
    assert cancelled.slot.running_id == "a"
    c = accept(cancelled.slot, after("c", 1_700), 1_700, RETENTION).slot
    assert c is not None and c.held


def test_a_held_call_read_late_with_a_newer_one_is_replaced() -> None:
    # Read late, a pending call due before the next was made fires first (due_before); a held
    # one cannot fire, so the newer call replaces it.
    held = accept(running_a(), after("b", 1_500), 1_500, RETENTION).slot
    assert not rules.due_before(held, after("c", 3_000), 3_100)
    assert not rules.fires_when_read(held)


def test_a_leading_call_of_a_running_key_waits_for_the_run() -> None:
    slot = accept(None, after("a", 0, leading=True), 0, RETENTION)
    assert [e.call.id for e in slot.executions] == ["a"]
    b = accept(slot.slot, after("b", 10_000, leading=True), 10_000, RETENTION)
    assert b.executions == [] and b.slot is not None and b.slot.held
    ended = finished(b.slot, "a", 1, 12_000).slot
    assert [e.call.id for e in tick(ended, "b", 12_001, RETENTION).executions] == ["b"]


# -- model ------------------------------------------------------------------------------------


@dataclass
class Run:
    call: Call
    fired_ms: int
    ends_ms: int
    calls_before: int  # calls taken in before it fired


@dataclass
class Key:
    """One key driven as the processor and a worker drive it: calls, the timer (an index of
    (due, timer id) entries that each fire once, as in the DB), and runs that end later."""

    slot: Slot | None = None
    timers: list[tuple[int, str]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    calls: int = 0

    def enact(self, decision: rules.Decision, now: int, durations: list[int]) -> None:
        before = self.slot
        self.slot = decision.slot
        slot = self.slot
        if decision.changed and slot is not None and (
                before is None or (before.due_ms, before.timer_id) != (slot.due_ms, slot.timer_id)):
            heapq.heappush(self.timers, (slot.due_ms, slot.timer_id))
        for execution in decision.executions:
            duration = durations[len(self.runs) % len(durations)]
            self.runs.append(Run(execution.call, now, now + duration, self.calls))


def drive(call_times: list[int], durations: list[int], delay: int) -> tuple[Key, list[Call]]:
    key = Key()
    calls = [after(f"c{i:03}", at, delay_ms=delay) for i, at in enumerate(call_times)]
    waiting = list(calls)
    while True:
        running = key.runs[-1] if key.runs and key.slot is not None and \
            key.slot.running_id == key.runs[-1].call.id else None
        moments = [m for m in (waiting[0].submitted_ms if waiting else None,
                               running.ends_ms if running else None,
                               key.timers[0][0] if key.timers else None) if m is not None]
        if not moments:
            return key, calls
        now = min(moments)
        assert now < 10_000_000, "the model does not settle"
        # At one moment: a run's end, then a call, then the timer (any order is possible; the
        # times asserted below follow from this one).
        if running is not None and running.ends_ms == now:
            key.enact(finished(key.slot, running.call.id, 1, now), now, durations)
        elif waiting and waiting[0].submitted_ms == now:
            key.calls += 1
            key.enact(accept(key.slot, waiting.pop(0), now, RETENTION), now, durations)
        else:
            due, timer_id = heapq.heappop(key.timers)
            slot = key.slot
            if slot is not None and (slot.due_ms, slot.timer_id) == (due, timer_id):
                key.enact(tick(slot, timer_id, now, RETENTION), now, durations)


@settings(max_examples=400, deadline=None)
@given(gaps=st.lists(st.integers(0, 3_000), min_size=1, max_size=25),
       durations=st.lists(st.integers(0, 4_000), min_size=1, max_size=5),
       delay=st.integers(0, 1_500))
def test_runs_never_overlap_and_each_has_the_latest_arguments_at_the_earliest_moment(
        gaps: list[int], durations: list[int], delay: int) -> None:
    call_times = [sum(gaps[:i + 1]) for i in range(len(gaps))]
    key, calls = drive(call_times, durations, delay)
    runs = key.runs
    assert runs and runs[-1].call.id == calls[-1].id, "the latest call always runs"
    previous_end: int | None = None
    for run in runs:
        latest = calls[run.calls_before - 1]
        assert run.call == latest, "a run has the latest call made before it fired"
        earliest = latest.submitted_ms + delay
        if previous_end is not None:
            assert run.fired_ms >= previous_end, "runs of a key never overlap"
            if latest.submitted_ms < previous_end:  # it was held: fires after the end
                earliest = max(earliest, previous_end + 1)
        assert run.fired_ms == earliest, "it fires once both its quiet period and the run end"
        previous_end = run.ends_ms
    for before, run in zip(runs, runs[1:], strict=False):
        assert run.calls_before > before.calls_before, "a run is of a call made after the last"


def test_the_model_sees_overlap_without_if_running() -> None:
    """The model's overlap check can fail: with the default, a call runs beside a long run."""
    key = Key()
    durations = [5_000]
    a, b = after("a", 0, if_running="concurrent"), after("b", 1_500, if_running="concurrent")
    key.enact(accept(None, a, 0, RETENTION), 0, durations)
    key.enact(tick(key.slot, "a", DELAY, RETENTION), DELAY, durations)
    key.enact(accept(key.slot, b, 1_500, RETENTION), 1_500, durations)
    key.enact(tick(key.slot, "b", 2_500, RETENTION), 2_500, durations)
    overlap: list[Any] = [(r.call.id, r.fired_ms, r.ends_ms) for r in key.runs]
    assert overlap == [("a", 1_000, 6_000), ("b", 2_500, 7_500)]
