"""What one key's slot does with calls, ticks and cancels (cfstream.scheduling.rules)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_calls import DELAY, RETENTION, KeyLog, make_call

from cfstream.scheduling import rules
from cfstream.scheduling.rules import (
    Slot,
    accept,
    cancel,
    due_before,
    fire_if_due,
    fires_when_read,
    tick,
)
from cfstream.wire import Call, FiredCall


def types(decision: rules.Decision) -> list[tuple[str, str]]:
    return [(e["type"], e["id"]) for e in decision.events]


# -- accept ---------------------------------------------------------------------------------


def test_first_call_is_due_after_its_delay() -> None:
    call = make_call("a", submitted_ms=10_000)
    decision = accept(None, call, now_ms=10_050, retention_ms=RETENTION)

    assert decision.changed
    assert decision.slot == Slot(call=call, first_ms=10_000, due_ms=11_000)
    assert decision.slot.timer_id == "a"
    assert decision.executions == []
    assert decision.events == [{
        "v": 1, "type": "scheduled", "id": "a", "task": "tasks:notify", "defer_key": "k",
        "ts_ms": 10_050, "due_ms": 11_000, "submitted_ms": 10_000,
    }]


def test_due_time_follows_submit_time_not_processing_time() -> None:
    # A processor that lags must not stretch the quiet period.
    decision = accept(None, make_call("a", 0), now_ms=900, retention_ms=RETENTION)
    assert decision.slot is not None and decision.slot.due_ms == DELAY


def test_a_burst_read_late_fires_only_its_latest_call() -> None:
    # A replica that reads three calls after their due time: accepting them without firing,
    # then firing what is due, runs the latest only, with the others deferred to it.
    calls = [make_call(name, 10 * i) for i, name in enumerate("abc")]
    slot, events = None, []
    for call in calls:
        decision = accept(slot, call, now_ms=5_000, retention_ms=RETENTION, fire_due=False)
        assert decision.executions == []
        slot, events = decision.slot, events + decision.events
    fired = fire_if_due(slot, now_ms=5_000, retention_ms=RETENTION)
    assert [e.call.id for e in fired.executions] == ["c"]
    assert fired.executions[0].due_ms == 20 + DELAY
    assert [(e["type"], e["id"], e.get("successor")) for e in events
            if e["type"] == "deferred"] == [("deferred", "a", "b"), ("deferred", "b", "c")]
    # Fired: nothing is left to fire, and a call not yet due waits for its tick.
    assert fire_if_due(fired.slot, 5_000, RETENTION).executions == []
    waiting = accept(None, make_call("d", 5_000), 5_000, RETENTION, fire_due=False).slot
    assert not fire_if_due(waiting, 5_999, RETENTION).changed
    assert [e.call.id for e in fire_if_due(waiting, 6_000, RETENTION).executions] == ["d"]


def test_a_call_due_before_the_next_was_made_fires_even_when_both_are_read_late() -> None:
    # delay 0: "a" was due at 0, "b" made at 10. Read together at 5000, both run (in order);
    # merging same-key calls without a delay is the workers' backlog's job.
    a, b = make_call("a", 0, delay_ms=0), make_call("b", 10, delay_ms=0)
    slot = accept(None, a, 5_000, RETENTION, fire_due=False).slot
    assert due_before(slot, b, now_ms=5_000)
    assert not due_before(slot, b, now_ms=-1)  # not due yet by the clock: no
    assert due_before(slot, make_call("c", 0, delay_ms=0), 5_000)  # made as a came due
    first = fire_if_due(slot, 5_000, RETENTION)
    assert [e.call.id for e in first.executions] == ["a"]
    decision = accept(first.slot, b, 5_000, RETENTION, fire_due=False)
    assert not [e for e in decision.events if e["type"] == "deferred"]
    assert [e.call.id for e in fire_if_due(decision.slot, 5_000, RETENTION).executions] == ["b"]
    # With a delay, the burst's first call was not due when the second was made: replaced.
    slot = accept(None, make_call("a", 0), 5_000, RETENTION, fire_due=False).slot
    assert not due_before(slot, make_call("b", 10), 5_000)


def test_only_a_call_without_a_quiet_period_fires_as_soon_as_it_is_read() -> None:
    assert fires_when_read(
        accept(None, make_call("a", 0, delay_ms=0), 0, RETENTION, fire_due=False).slot)
    # Its quiet period passed while unread: a newer call may be right behind it.
    late = accept(None, make_call("a", 0), 5_000, RETENTION, fire_due=False).slot
    assert late is not None and late.due_ms <= 5_000 and not fires_when_read(late)
    # max_wait passed before the call was made: nothing to wait for.
    slot = accept(None, make_call("a", 0, max_wait_ms=2_000), 0, RETENTION).slot
    capped = accept(slot, make_call("b", 3_000, max_wait_ms=2_000), 3_000, RETENTION,
                    fire_due=False).slot
    assert capped is not None and capped.due_ms == 2_000 and fires_when_read(capped)
    assert not fires_when_read(None)


def test_newer_call_replaces_pending_one() -> None:
    first = accept(None, make_call("a", 0), 0, RETENTION).slot
    newer = make_call("b", 500)
    decision = accept(first, newer, now_ms=520, retention_ms=RETENTION)

    assert decision.changed
    assert decision.slot == Slot(call=newer, first_ms=0, due_ms=1_500)
    assert types(decision) == [("deferred", "a"), ("scheduled", "b")]
    deferred, scheduled = decision.events
    assert deferred["successor"] == "b"
    assert deferred["reason"] == "replaced"
    assert deferred["ts_ms"] == 520
    assert scheduled["due_ms"] == 1_500
    assert scheduled["submitted_ms"] == 500
    assert decision.executions == []


def test_older_call_is_deferred_to_the_pending_one() -> None:
    pending = accept(None, make_call("b", 500), 500, RETENTION).slot
    late = make_call("a", 100)
    decision = accept(pending, late, now_ms=600, retention_ms=RETENTION)

    assert not decision.changed
    assert decision.slot is pending
    assert types(decision) == [("deferred", "a")]
    assert decision.events[0]["successor"] == "b"
    assert decision.events[0]["reason"] == "out_of_order"
    assert decision.executions == []


def test_older_call_is_deferred_to_the_last_fired_one() -> None:
    slot = accept(None, make_call("b", 500), 500, RETENTION).slot
    marker = tick(slot, "b", 1_500, RETENTION).slot
    assert marker is not None and marker.call is None

    decision = accept(marker, make_call("a", 100), now_ms=1_600, retention_ms=RETENTION)

    assert not decision.changed
    assert decision.slot is marker
    assert types(decision) == [("deferred", "a")]
    assert decision.events[0]["successor"] == "b"
    assert decision.executions == []


def test_call_older_than_fired_one_follows_the_pending_one_when_there_is_one() -> None:
    slot = accept(None, make_call("b", 500), 500, RETENTION).slot
    slot = tick(slot, "b", 1_500, RETENTION).slot
    slot = accept(slot, make_call("c", 2_000), 2_000, RETENTION).slot

    decision = accept(slot, make_call("a", 100), 2_100, RETENTION)

    assert decision.slot is slot
    assert decision.events[0]["successor"] == "c"


def test_call_after_a_fire_starts_a_new_window_and_keeps_the_marker() -> None:
    slot = accept(None, make_call("a", 0, max_wait_ms=2_000), 0, RETENTION).slot
    slot = tick(slot, "a", 1_000, RETENTION).slot

    later = make_call("b", 5_000, max_wait_ms=2_000)
    decision = accept(slot, later, 5_000, RETENTION)

    assert decision.slot == Slot(call=later, first_ms=5_000, due_ms=6_000, fired_id="a",
                                 fired_submitted_ms=0, execution=slot.execution)
    assert types(decision) == [("scheduled", "b")]  # nothing pending to defer


def test_redelivered_pending_call_changes_nothing() -> None:
    call = make_call("a", 0)
    slot = accept(None, call, 0, RETENTION).slot
    decision = accept(slot, call, 300, RETENTION)

    assert not decision.changed
    assert decision.slot is slot
    assert decision.events == []
    assert decision.executions == []


def test_a_redelivered_fired_call_sends_the_same_execution_again_and_changes_nothing() -> None:
    # After a crash RocksDB may hold the marker while the execution never reached Kafka:
    # sending it again (workers skip ids they know) is what keeps the call from being lost.
    call = make_call("a", 0)
    slot = accept(None, call, 0, RETENTION).slot
    fired = tick(slot, "a", 1_000, RETENTION)
    marker = fired.slot

    decision = accept(marker, call, 2_000, RETENTION)
    assert not decision.changed
    assert decision.slot is marker
    assert decision.events == [] and decision.executions == fired.executions
    replayed_tick = tick(marker, "a", 2_000, RETENTION)
    assert replayed_tick.slot is marker and replayed_tick.executions == fired.executions

    # Still recognised after a newer call became pending.
    pending = accept(marker, make_call("b", 3_000), 3_000, RETENTION).slot
    decision = accept(pending, call, 3_100, RETENTION)
    assert decision.slot is pending
    assert decision.events == [] and decision.executions == fired.executions


def test_redelivered_fired_call_does_not_overtake_a_call_of_the_same_millisecond() -> None:
    # Two calls stamped in the same millisecond: the redelivery of the one that ran first must not
    # be taken for a newer call once the other has run (it would run twice).
    first, second = make_call("a", 0), make_call("b", 0)
    slot = accept(None, first, 0, RETENTION).slot
    slot = tick(slot, first.id, DELAY, RETENTION).slot
    decision = accept(slot, second, DELAY + 1, RETENTION)
    slot = decision.slot
    if slot is not None and slot.call is not None:
        slot = tick(slot, slot.call.id, 3 * DELAY, RETENTION).slot

    for redelivered in (first, second):
        again = accept(slot, redelivered, 4 * DELAY, RETENTION)
        # At most the execution already sent, sent again: never a second run.
        assert all(e == slot.execution for e in again.executions)
        slot = again.slot
        assert slot is not None and slot.call is None


def test_call_already_due_fires_at_once() -> None:
    call = make_call("a", 0)
    decision = accept(None, call, now_ms=5_000, retention_ms=RETENTION)

    assert types(decision) == [("scheduled", "a")]
    assert decision.events[0]["due_ms"] == DELAY
    assert decision.executions == [FiredCall(call=call, due_ms=DELAY, fired_ms=5_000)]
    assert decision.changed
    assert decision.slot is not None
    assert decision.slot.call is None
    assert decision.slot.fired_id == "a"


def test_call_already_due_replacing_a_pending_one_defers_it_and_fires() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot
    newer = make_call("b", 100)
    decision = accept(slot, newer, now_ms=5_000, retention_ms=RETENTION)

    assert types(decision) == [("deferred", "a"), ("scheduled", "b")]
    assert [e.call.id for e in decision.executions] == ["b"]


# -- tick -----------------------------------------------------------------------------------


def test_tick_for_another_id_or_early_does_nothing() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot

    for timer_id, now in (("other", 5_000), ("a", 999)):
        decision = tick(slot, timer_id, now, RETENTION)
        assert not decision.changed
        assert decision.slot is slot
        assert decision.executions == [] and decision.events == []

    assert tick(None, "a", 5_000, RETENTION) == rules.Decision(None, changed=False)


def test_stale_tick_of_a_replaced_call_does_nothing() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot
    slot = accept(slot, make_call("b", 800), 800, RETENTION).slot

    decision = tick(slot, "a", 1_000, RETENTION)  # the timer of the replaced call
    assert decision.slot is slot and not decision.changed and decision.executions == []


def test_tick_fires_due_call_and_leaves_a_marker_for_retention() -> None:
    call = make_call("a", 0)
    slot = accept(None, call, 0, RETENTION).slot
    decision = tick(slot, "a", now_ms=1_020, retention_ms=RETENTION)

    assert decision.changed
    assert decision.executions == [FiredCall(call=call, due_ms=1_000, fired_ms=1_020)]
    assert decision.events == []
    assert decision.slot == Slot(call=None, first_ms=0, due_ms=1_020 + RETENTION,
                                 fired_id="a", fired_submitted_ms=0,
                                 execution=decision.executions[0])
    assert decision.slot.timer_id == "a"


def test_later_tick_forgets_the_marker() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot
    marker = tick(slot, "a", 1_000, RETENTION).slot
    assert marker is not None

    early = tick(marker, "a", 1_000 + RETENTION - 1, RETENTION)
    assert early.slot is marker and not early.changed

    gone = tick(marker, "a", 1_000 + RETENTION, RETENTION)
    assert gone.changed
    assert gone.slot is None
    assert gone.executions == [] and gone.events == []


def test_zero_retention_deletes_at_once() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot
    decision = tick(slot, "a", 1_000, retention_ms=0)

    assert decision.changed
    assert decision.slot is None
    assert [e.call.id for e in decision.executions] == ["a"]


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_pending_call_reports_cancelled_and_leaves_a_marker() -> None:
    call = make_call("a", 0)
    slot = accept(None, call, 0, RETENTION).slot
    decision = cancel(slot, "a", now_ms=400, retention_ms=RETENTION, reason="user asked")

    assert decision.changed
    assert decision.executions == []
    assert types(decision) == [("cancelled", "a")]
    assert decision.events[0]["reason"] == "user asked"
    assert decision.slot == Slot(call=None, first_ms=0, due_ms=400 + RETENTION, fired_id="a",
                                 fired_submitted_ms=0)
    # The cancelled call neither fires later nor comes back when redelivered.
    assert tick(decision.slot, "a", 1_000, RETENTION).executions == []
    assert accept(decision.slot, call, 1_000, RETENTION).executions == []


def test_cancel_without_reason_says_cancelled() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot
    assert cancel(slot, "a", 1, RETENTION).events[0]["reason"] == "cancelled"


def test_cancel_of_another_id_is_a_no_op() -> None:
    slot = accept(None, make_call("a", 0), 0, RETENTION).slot
    marker = tick(slot, "a", 1_000, RETENTION).slot

    for current, call_id in ((slot, "b"), (marker, "a"), (None, "a")):
        decision = cancel(current, call_id, 2_000, RETENTION)
        assert not decision.changed
        assert decision.slot is current
        assert decision.events == [] and decision.executions == []


# -- scenarios ------------------------------------------------------------------------------


def run(calls: list[tuple[int, Call]], until_ms: int, step_ms: int = 100,
        retention_ms: int = RETENTION) -> list[FiredCall]:
    """Feed calls at their arrival times and tick every ``step_ms`` like the processor's timer."""
    slot: Slot | None = None
    fired: list[FiredCall] = []
    pending = sorted(calls, key=lambda item: item[0])
    for now in range(0, until_ms + 1, step_ms):
        if slot is not None and slot.due_ms <= now:  # the timer ticks what the index has due
            decision = tick(slot, slot.timer_id, now, retention_ms)
            slot = decision.slot
            fired += decision.executions
        while pending and pending[0][0] <= now:
            decision = accept(slot, pending.pop(0)[1], now, retention_ms)
            slot = decision.slot
            fired += decision.executions
    return fired


def test_quiet_period_runs_the_latest_call_after_a_break_of_delay() -> None:
    d = 10_000
    calls = [make_call(name, at, delay_ms=d) for name, at in (("a", 0), ("b", 8_000),
                                                               ("c", 16_000))]
    fired = run([(c.submitted_ms, c) for c in calls], until_ms=40_000)

    assert [(e.call.id, e.due_ms, e.fired_ms) for e in fired] == [("c", 26_000, 26_000)]


def test_quiet_period_ticks_at_the_first_due_times_do_nothing() -> None:
    d = 10_000
    slot = None
    for name, at in (("a", 0), ("b", 8_000), ("c", 16_000)):
        slot = accept(slot, make_call(name, at, delay_ms=d), at, RETENTION).slot
    assert slot is not None and slot.due_ms == 26_000
    for timer_id, now in (("a", 10_000), ("b", 18_000), ("c", 25_999)):
        assert tick(slot, timer_id, now, RETENTION).executions == []
    assert [e.call.id for e in tick(slot, "c", 26_000, RETENTION).executions] == ["c"]


def test_max_wait_caps_how_long_a_stream_of_calls_postpones_a_run() -> None:
    d, max_wait = 10_000, 20_000
    calls = [make_call(f"c{i}", i * d // 2, delay_ms=d, max_wait_ms=max_wait)
             for i in range(11)]  # every 0.5d for 5d
    fired = run([(c.submitted_ms, c) for c in calls], until_ms=100_000)

    # Windows: c0..c3 (first at 0), c4..c7 (first at 2d), c8..c10 (first at 4d); each runs its
    # newest call no later than its first call + max_wait, although calls never pause for d.
    assert [(e.call.id, e.due_ms, e.fired_ms) for e in fired] == [
        ("c3", 20_000, 20_000), ("c7", 40_000, 40_000), ("c10", 60_000, 60_000),
    ]
    for execution, first in zip(fired, (calls[0], calls[4], calls[8]), strict=True):
        assert execution.due_ms <= first.submitted_ms + max_wait


# -- property: every call is executed once or deferred to one that is ---------------------


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    delay = draw(st.integers(0, 3_000))
    max_wait = draw(st.none() | st.integers(delay + 1, delay + 5_000))
    count = draw(st.integers(1, 12))
    stamps = draw(st.lists(st.integers(0, 8_000), min_size=count, max_size=count))
    calls = [make_call(f"id{i}", ms, delay_ms=delay, max_wait_ms=max_wait)
             for i, ms in enumerate(stamps)]
    # Each step: a call arrival (an index, repeats are redeliveries) or time passing (a tick).
    steps = draw(st.lists(
        st.tuples(st.sampled_from(["call", "tick", "stale"]), st.integers(0, count - 1),
                  st.integers(0, 2_500)),
        min_size=count, max_size=4 * count,
    ))
    # Every call arrives at least once.
    steps += [("call", i, 0) for i in range(count)]
    steps = draw(st.permutations(steps))
    flush = draw(st.booleans())
    return {"calls": calls, "steps": steps, "flush": flush, "delay": delay,
            "max_wait": max_wait}


@settings(max_examples=400, deadline=None)
@given(histories())
def test_each_call_runs_once_or_is_deferred_to_one_that_runs(history: dict[str, Any]) -> None:
    calls: list[Call] = history["calls"]
    retention = 10**12  # markers outlive the test: every redelivery is recognised
    key = KeyLog()  # a replay sends its execution again: the very same record, or it fails
    now = 0

    for kind, index, advance in history["steps"]:
        now += advance
        if kind == "call":
            key.apply(accept(key.slot, calls[index], now, retention))
        elif kind == "tick" and key.slot is not None:
            key.apply(tick(key.slot, key.slot.timer_id, now, retention))  # as the index names
        elif kind == "stale":
            key.apply(tick(key.slot, calls[index].id, now, retention))
    slot = key.slot
    if history["flush"] and slot is not None:
        key.apply(tick(slot, slot.timer_id, max(now, slot.due_ms), retention))
        slot = key.slot

    by_id = {c.id: c for c in calls}
    executed = list(key.sent)
    pending = slot.call.id if slot is not None and slot.call is not None else None
    if history["flush"]:
        assert pending is None
    assert pending not in executed

    # The first outcome of each call: run, or deferred (naming a successor).
    first_outcome = key.outcomes()

    for call in calls:
        outcome = first_outcome.get(call.id)
        if call.id == pending:
            assert outcome is None, f"{call.id} is pending but already had {outcome}"
            continue
        assert outcome is not None, f"{call.id} was neither executed, deferred nor pending"
        # Follow the chain of successors: it ends at a call that ran or is still pending.
        seen = {call.id}
        current = call.id
        while first_outcome.get(current, ("pending", None))[0] == "deferred":
            current = first_outcome[current][1]
            assert current is not None and current not in seen, "successor chain loops"
            seen.add(current)
        assert current in executed or current == pending, f"{call.id} chain ends at {current}"

    # Per window (calls accepted since the previous run), the newest accepted call runs, when
    # the latest call's delay (capped by the window's first call + max_wait) has passed.
    window: list[Call] = []
    sent: set[str] = set()
    for kind, item in key.items:
        if kind == "event" and item["type"] == "scheduled":
            window.append(by_id[item["id"]])
        elif kind == "execution":
            if item.call.id in sent:
                continue  # sent again for a replay (checked above)
            sent.add(item.call.id)
            assert item.call in window
            newest = max(c.submitted_ms for c in window)
            assert item.call.submitted_ms == newest
            expected_due = newest + history["delay"]
            if history["max_wait"] is not None:
                expected_due = min(expected_due, window[0].submitted_ms + history["max_wait"])
            assert item.due_ms == expected_due
            assert item.fired_ms >= item.due_ms
            window = []


# -- retries: the same call again, a later attempt, not before a time -----------------------


def retry_of(call: Call, attempt: int, not_before_ms: int) -> Call:
    return dataclasses.replace(call, attempt=attempt, not_before_ms=not_before_ms)


def test_a_retry_of_the_fired_call_is_pending_until_its_time() -> None:
    first = make_call("a", 0)
    fired = tick(accept(None, first, 0, RETENTION).slot, "a", DELAY, RETENTION)
    retry = retry_of(first, 2, 5_000)

    decision = accept(fired.slot, retry, 1_200, RETENTION)

    assert decision.slot is not None and decision.slot.call == retry
    assert decision.slot.due_ms == 5_000  # its not_before, past its own delay
    assert decision.events[0]["type"] == "scheduled" and decision.events[0]["attempt"] == 2
    assert tick(decision.slot, "a", 4_999, RETENTION).executions == []
    again = tick(decision.slot, "a", 5_000, RETENTION)
    assert [(e.call.id, e.call.attempt) for e in again.executions] == [("a", 2)]
    assert again.slot is not None and again.slot.fired_attempt == 2


def test_replays_of_earlier_attempts_change_nothing() -> None:
    first = make_call("a", 0)
    fired = tick(accept(None, first, 0, RETENTION).slot, "a", DELAY, RETENTION).slot
    pending = accept(fired, retry_of(first, 2, 3_000), 1_500, RETENTION).slot
    for replay in (first, retry_of(first, 2, 3_000)):
        decision = accept(pending, replay, 2_000, RETENTION)
        assert not decision.changed and decision.slot is pending and decision.events == []
    ran = tick(pending, "a", 3_000, RETENTION).slot
    decision = accept(ran, first, 4_000, RETENTION)
    assert not decision.changed  # attempt 1 read again after attempt 2 ran: still a replay


def test_a_newer_call_replaces_a_pending_retry_and_an_older_retry_follows_a_newer_call() -> None:
    first = make_call("a", 0)
    fired = tick(accept(None, first, 0, RETENTION).slot, "a", DELAY, RETENTION).slot
    pending_retry = accept(fired, retry_of(first, 2, 60_000), 1_500, RETENTION).slot
    newer = make_call("b", 2_000)

    replaced = accept(pending_retry, newer, 2_000, RETENTION)

    assert types(replaced) == [("deferred", "a"), ("scheduled", "b")]
    assert replaced.events[0]["successor"] == "b" and replaced.events[0]["attempt"] == 2
    assert replaced.slot is not None and replaced.slot.due_ms == 2_000 + DELAY
    # The other way round: the retry comes while the newer call waits; it is older, so it
    # follows the newer call, whose time stands.
    late = accept(replaced.slot, retry_of(first, 3, 3_000), 2_500, RETENTION)
    assert types(late) == [("deferred", "a")] and late.events[0]["successor"] == "b"
    assert late.slot is replaced.slot


@st.composite
def retry_histories(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 6))
    stamps = sorted(draw(st.lists(st.integers(0, 5_000), min_size=count, max_size=count)))
    calls = [make_call(f"id{i}", ms, delay_ms=draw(st.integers(0, 1_000)))
             for i, ms in enumerate(stamps)]
    # Each step: a call arrives, time passes and the timer runs, or the last execution fails
    # and its retry (backoff drawn) arrives; each may repeat (redeliveries).
    steps = draw(st.lists(st.tuples(st.sampled_from(["call", "tick", "fail", "replay"]),
                                    st.integers(0, count - 1), st.integers(0, 2_000)),
                          min_size=count, max_size=5 * count))
    return {"calls": calls, "steps": steps + [("call", i, 0) for i in range(count)]}


@settings(max_examples=400, deadline=None)
@given(retry_histories())
def test_each_attempt_runs_once_never_early_and_retries_end_in_a_run(
        history: dict[str, Any]) -> None:
    calls: list[Call] = history["calls"]
    slot: Slot | None = None
    now = 0
    ran: list[FiredCall] = []
    sent: list[Call] = []  # every record that reached the slot, replays included
    outcome: dict[tuple[str, int], str] = {}  # (id, attempt) -> "deferred:<successor>"

    def apply(decision: rules.Decision) -> None:
        nonlocal slot
        slot = decision.slot
        for execution in decision.executions:
            if execution not in ran:
                ran.append(execution)
        for item in decision.events:
            if item["type"] == "deferred":
                outcome.setdefault((item["id"], item.get("attempt", 1)),
                                   f"deferred:{item['successor']}")

    for kind, index, advance in history["steps"]:
        now += advance
        if kind == "call":
            call = calls[index]
        elif kind == "fail" and ran:
            failed = ran[-1].call
            call = retry_of(failed, failed.attempt + 1, now + advance)
        elif kind == "replay" and sent:
            call = sent[index % len(sent)]
        else:
            if slot is not None:
                apply(tick(slot, slot.timer_id, now, 10**12))
            continue
        sent.append(call)
        apply(accept(slot, call, now, 10**12))
    while slot is not None and slot.call is not None:  # let the timer run everything due
        now = max(now, slot.due_ms)
        apply(tick(slot, slot.timer_id, now, 10**12))

    attempts = [(e.call.id, e.call.attempt) for e in ran]
    assert len(attempts) == len(set(attempts)), "an attempt ran twice"
    for execution in ran:
        assert execution.fired_ms >= execution.due_ms
        if execution.call.not_before_ms is not None:
            assert execution.fired_ms >= execution.call.not_before_ms, "a retry ran early"
    # Every retry that arrived either ran, or was deferred along a chain that ends in a run.
    ran_ids = {e.call.id for e in ran}

    def ends_in_a_run(call_id: str, seen: frozenset[str] = frozenset()) -> bool:
        successors = [to.split(":", 1)[1] for (i, _), to in outcome.items() if i == call_id]
        return call_id in ran_ids or any(ends_in_a_run(s, seen | {call_id})
                                          for s in successors if s not in seen)

    for call in sent:
        if call.attempt == 1 or (call.id, call.attempt) in attempts:
            continue
        if (call.id, call.attempt) not in outcome:  # neither run nor deferred: superseded
            assert any(i == call.id and a > call.attempt for i, a in attempts), call
            continue
        assert ends_in_a_run(call.id), call
