"""Deferring modes in the rules: ``leading`` (leading + trailing edge), ``keep="first"`` and
``collect`` (every call's argument for one run)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_calls import DELAY, RETENTION, KeyLog, make_call, outcomes

from cfstream.scheduling import rules
from cfstream.scheduling.rules import (
    Slot,
    accept,
    due_before,
    fire_if_due,
    fires_when_read,
    tick,
)
from cfstream.wire import Call, FiredCall


def gather(call_id: str, submitted_ms: int, max_calls: int = 100, max_bytes: int = 1_000,
           **kwargs: Any) -> Call:
    return make_call(call_id, submitted_ms, collect=(max_calls, max_bytes), **kwargs)


def lead(call_id: str, submitted_ms: int, **kwargs: Any) -> Call:
    return make_call(call_id, submitted_ms, leading=True, **kwargs)


def first(call_id: str, submitted_ms: int, **kwargs: Any) -> Call:
    return make_call(call_id, submitted_ms, keep="first", **kwargs)


# -- leading ----------------------------------------------------------------------------------


def test_the_first_call_of_a_quiet_key_fires_at_once() -> None:
    call = lead("a", 10_000)
    decision = accept(None, call, now_ms=10_004, retention_ms=RETENTION)

    assert decision.executions == [FiredCall(call=call, due_ms=10_000, fired_ms=10_004)]
    assert decision.events[0]["due_ms"] == 10_000
    assert decision.slot is not None and decision.slot.call is None


def test_a_leading_call_read_with_its_batch_fires_when_read() -> None:
    # The processor accepts a batch without firing, then fires what had nothing to wait for.
    slot = accept(None, lead("a", 0), 50, RETENTION, fire_due=False).slot
    assert slot is not None and slot.due_ms == 0 and fires_when_read(slot)
    assert [e.call.id for e in fire_if_due(slot, 50, RETENTION).executions] == ["a"]


def test_calls_after_the_leading_run_collapse_into_one_trailing_run() -> None:
    slot = accept(None, lead("a", 0), 0, RETENTION).slot
    b = accept(slot, lead("b", 300), 300, RETENTION)
    assert b.executions == [] and b.slot is not None and b.slot.due_ms == 300 + DELAY
    c = accept(b.slot, lead("c", 900), 900, RETENTION)
    assert outcomes(c) == [("deferred", "b", "c"), ("scheduled", "c", None)]
    assert c.slot is not None and c.slot.due_ms == 900 + DELAY
    assert tick(c.slot, "c", 1_899, RETENTION).executions == []
    fired = tick(c.slot, "c", 1_900, RETENTION)
    assert [(e.call.id, e.due_ms) for e in fired.executions] == [("c", 1_900)]


def test_the_key_is_quiet_again_a_delay_after_the_last_run_was_due() -> None:
    slot = accept(None, lead("a", 0), 0, RETENTION).slot
    slot = tick(accept(slot, lead("b", 500), 500, RETENTION).slot, "b", 1_500, RETENTION).slot
    # The trailing run was due at 1500: a call before 2500 waits a quiet period...
    early = accept(slot, lead("c", 2_499), 2_499, RETENTION)
    assert early.executions == [] and early.slot is not None and early.slot.due_ms == 3_499
    # ...one at 2500 runs at once.
    on_time = accept(slot, lead("c", 2_500), 2_500, RETENTION)
    assert [(e.call.id, e.due_ms) for e in on_time.executions] == [("c", 2_500)]


def test_a_leading_run_is_remembered_for_its_delay_even_beyond_the_retention() -> None:
    long = 10 * RETENTION
    marker = accept(None, lead("a", 0, delay_ms=long), 0, RETENTION).slot
    assert marker is not None and marker.due_ms == long  # not RETENTION
    assert accept(marker, lead("b", long - 1, delay_ms=long), long - 1, RETENTION).executions == []
    assert tick(marker, "a", long, RETENTION).slot is None  # then forgotten, and quiet again
    assert accept(None, lead("b", long, delay_ms=long), long, RETENTION).executions


def test_a_cancelled_call_is_not_a_run() -> None:
    pending = accept(None, make_call("a", 0), 0, RETENTION).slot
    marker = rules.cancel(pending, "a", 10, RETENTION).slot
    assert [e.call.id for e in accept(marker, lead("b", 20), 20, RETENTION).executions] == ["b"]


def test_a_leading_call_read_late_with_a_newer_one_still_runs_first() -> None:
    # Both read at 5000: the leading call was due (at once) before the newer one was made.
    slot = accept(None, lead("a", 0), 5_000, RETENTION, fire_due=False).slot
    newer = lead("b", 100)
    assert due_before(slot, newer, 5_000)
    fired = fire_if_due(slot, 5_000, RETENTION)
    assert [(e.call.id, e.due_ms) for e in fired.executions] == [("a", 0)]
    trailing = accept(fired.slot, newer, 5_000, RETENTION, fire_due=False)
    assert trailing.slot is not None and trailing.slot.due_ms == 100 + DELAY
    assert not fires_when_read(trailing.slot)  # its quiet period passed unread: the timer's


# -- keep="first" -----------------------------------------------------------------------------


def test_a_newer_call_pushes_the_pending_one_back_and_is_deferred_to_it() -> None:
    a = first("a", 0)
    slot = accept(None, a, 0, RETENTION).slot
    decision = accept(slot, first("b", 700), 720, RETENTION)

    assert decision.changed
    assert decision.slot == Slot(call=a, first_ms=0, due_ms=1_700, latest_ms=700, latest_id="b")
    assert outcomes(decision) == [("scheduled", "b", None), ("deferred", "b", "a")]
    assert decision.events[0]["due_ms"] == 1_700
    assert decision.events[1]["reason"] == "kept_first"
    assert tick(decision.slot, "a", 1_000, RETENTION).executions == []  # not due any more
    fired = tick(decision.slot, "a", 1_700, RETENTION)
    assert [(e.call.id, e.call.args, e.due_ms) for e in fired.executions] == [("a", ["a"], 1_700)]


def test_keep_first_a_retry_of_the_call_that_ran_is_taken_in_again() -> None:
    slot = accept(None, first("a", 0), 0, RETENTION).slot
    slot = accept(slot, first("b", 100), 100, RETENTION).slot
    marker = tick(slot, "a", 1_100, RETENTION).slot
    retry = dataclasses.replace(first("a", 0), attempt=2, not_before_ms=3_000)
    decision = accept(marker, retry, 1_200, RETENTION)
    assert outcomes(decision) == [("scheduled", "a", None)]
    assert decision.slot is not None and decision.slot.call == retry
    assert decision.slot.due_ms == 3_000


def test_keep_first_is_capped_by_max_wait() -> None:
    slot = accept(None, first("a", 0, max_wait_ms=2_500), 0, RETENTION).slot
    for i, at in enumerate((900, 1_800, 2_400)):
        slot = accept(slot, first(f"b{i}", at, max_wait_ms=2_500), at, RETENTION).slot
    assert slot is not None and slot.call is not None
    assert (slot.call.id, slot.due_ms) == ("a", 2_500)


def test_keep_first_an_older_call_is_still_out_of_order() -> None:
    slot = accept(None, first("b", 500), 500, RETENTION).slot
    decision = accept(slot, first("a", 100), 600, RETENTION)
    assert decision.slot is slot and not decision.changed
    assert decision.events[0]["reason"] == "out_of_order"


def test_keep_first_a_call_out_of_order_never_brings_the_due_time_forward() -> None:
    slot = accept(None, first("a", 0), 0, RETENTION).slot
    slot = accept(slot, first("c", 900), 900, RETENTION).slot
    slot = accept(slot, first("b", 400), 950, RETENTION).slot
    assert slot is not None and slot.due_ms == 1_900


def test_keep_first_a_burst_read_late_runs_its_first_call_at_the_last_ones_due_time() -> None:
    slot = None
    for i in range(3):
        slot = accept(slot, first(f"c{i}", 10 * i), 5_000, RETENTION, fire_due=False).slot
    fired = fire_if_due(slot, 5_000, RETENTION)
    assert [(e.call.id, e.due_ms) for e in fired.executions] == [("c0", 20 + DELAY)]


def test_a_replayed_deferred_call_changes_nothing() -> None:
    slot = accept(None, first("a", 0), 0, RETENTION).slot
    slot = accept(slot, first("b", 100), 100, RETENTION).slot
    again = accept(slot, first("b", 100), 200, RETENTION)
    assert again.slot is slot and not again.changed and again.executions == []
    # Nor after a run: b, newer than the call that ran, must not open a window of its own.
    marker = tick(slot, "a", 1_100, RETENTION).slot
    after = accept(marker, first("b", 100), 1_200, RETENTION)
    assert after.slot is marker and after.executions == []
    assert outcomes(after) == [("deferred", "b", "a")]


# -- collect ----------------------------------------------------------------------------------


def test_a_window_collects_every_calls_argument_in_order_for_one_run() -> None:
    slot = None
    for i, at in enumerate((0, 300, 600)):
        decision = accept(slot, gather(f"c{i}", at), at, RETENTION)
        slot = decision.slot
    assert outcomes(decision) == [("deferred", "c1", "c2"), ("scheduled", "c2", None)]
    assert decision.events[0]["reason"] == "collected"
    assert slot is not None and slot.call is not None and slot.due_ms == 1_600
    assert slot.collected_bytes == 3 * len('"c0"')
    fired = tick(slot, "c2", 1_600, RETENTION)
    (execution,) = fired.executions
    assert (execution.call.id, execution.call.args) == ("c2", ["c2"])
    assert execution.call.collected == ["c0", "c1", "c2"]
    assert execution.to_dict()["collected"] == ["c0", "c1", "c2"]


def test_a_full_window_is_due_at_once_and_the_next_call_opens_another() -> None:
    slot = accept(None, gather("c0", 0, max_calls=2), 0, RETENTION).slot
    full = accept(slot, gather("c1", 100, max_calls=2), 100, RETENTION)
    assert [(e.call.collected, e.due_ms) for e in full.executions] == [(["c0", "c1"], 100)]
    nxt = accept(full.slot, gather("c2", 200, max_calls=2), 200, RETENTION)
    assert nxt.executions == [] and nxt.slot is not None and nxt.slot.due_ms == 1_200
    one = accept(None, gather("d", 0, max_calls=1), 0, RETENTION)  # max_calls=1: each alone
    assert [e.call.collected for e in one.executions] == [["d"]]


def test_an_argument_that_would_overflow_max_bytes_fires_the_window_first() -> None:
    size = len('"c0"')
    slot = None
    for i in range(2):
        slot = accept(slot, gather(f"c{i}", 100 * i, max_bytes=2 * size + 1), 100 * i,
                      RETENTION, fire_due=False).slot
    decision = accept(slot, gather("c2", 200, max_bytes=2 * size + 1), 250, RETENTION,
                      fire_due=False)
    # Even when not firing what is due: the early fire is what keeps c2's argument.
    assert [(e.call.id, e.call.collected, e.due_ms) for e in decision.executions] == [
        ("c1", ["c0", "c1"], 200)]
    assert decision.slot is not None and decision.slot.call is not None
    assert decision.slot.call.collected == ["c2"] and decision.slot.collected_bytes == size


def test_a_replayed_collected_call_adds_nothing() -> None:
    slot = accept(None, gather("c0", 0), 0, RETENTION).slot
    slot = accept(slot, gather("c1", 100), 100, RETENTION).slot
    for replayed in (gather("c0", 0), gather("c1", 100)):
        again = accept(slot, replayed, 200, RETENTION)
        assert again.slot is slot and not again.changed and again.executions == []


def test_with_leading_the_leading_run_gets_its_own_argument_alone() -> None:
    first_run = accept(None, gather("a", 0, leading=True), 0, RETENTION)
    assert [e.call.collected for e in first_run.executions] == [["a"]]
    slot = accept(first_run.slot, gather("b", 100, leading=True), 100, RETENTION).slot
    slot = accept(slot, gather("c", 200, leading=True), 200, RETENTION).slot
    assert [e.call.collected for e in tick(slot, "c", 1_200, RETENTION).executions] == [
        ["b", "c"]]


# -- model: the rules, driven like the processor, against event time --------------------------


@dataclasses.dataclass
class Model:
    """What should happen, in event time: each call's outcome, and the runs with due times."""

    runs: list[tuple[str, int, list[Any] | None]]  # id, due, collected arguments
    outcome: dict[str, tuple[str, str | None]]


def reference(calls: list[Call], delay: int, max_wait: int | None, leading: bool,
              keep: str, collect: tuple[int, int] | None = None) -> Model:
    runs: list[tuple[str, int, list[Any] | None]] = []
    outcome: dict[str, tuple[str, str | None]] = {}
    window: list[Any] | None = None  # [first_ms, runner, due, arguments]
    last_due: int | None = None
    max_calls, max_bytes = collect or (0, 0)

    def cap(at: int, first_ms: int) -> int:
        return at + delay if max_wait is None else min(at + delay, first_ms + max_wait)

    def run(due: int) -> None:
        nonlocal window, last_due
        assert window is not None
        runs.append((window[1], due, window[3] if collect else None))
        last_due, window = due, None

    def size(arguments: list[Any]) -> int:
        return sum(len(f'"{a}"') for a in arguments)

    for call in calls:
        if window is not None and window[2] <= call.submitted_ms:  # due before call was made
            run(window[2])
        if window is not None and collect and size([*window[3], call.id]) > max_bytes:
            run(min(window[2], call.submitted_ms))  # early: the window is full
        if window is not None:
            if keep == "first":
                outcome[call.id] = ("deferred", window[1])
                window[2] = max(window[2], cap(call.submitted_ms, window[0]))
            else:
                outcome[window[1]] = ("deferred", call.id)
                window[1], window[2] = call.id, cap(call.submitted_ms, window[0])
                window[3].append(call.id)
        elif leading and (last_due is None or call.submitted_ms >= last_due + delay):
            window = [call.submitted_ms, call.id, call.submitted_ms, [call.id]]
        else:
            window = [call.submitted_ms, call.id, cap(call.submitted_ms, call.submitted_ms),
                      [call.id]]
        if window is not None and collect and len(window[3]) >= max_calls:
            window[2] = min(window[2], call.submitted_ms)
        if window is not None and window[2] <= call.submitted_ms:  # nothing to wait for
            run(window[2])
    if window is not None:
        run(window[2])
    for run_id, _, _ in runs:
        outcome[run_id] = ("run", None)
    return Model(runs, outcome)


@st.composite
def mode_histories(draw: st.DrawFn) -> dict[str, Any]:
    leading = draw(st.booleans())
    keep = draw(st.sampled_from(["last", "first"]))
    # Arguments are the ids ("id00": 6 bytes as JSON), so max_bytes 6..40 holds 1 to 6.
    collect = None if keep == "first" else draw(
        st.none() | st.tuples(st.integers(1, 6), st.integers(6, 40)))
    delay = draw(st.integers(1 if leading else 0, 3_000))
    max_wait = draw(st.none() | st.integers(delay + 1, delay + 5_000))
    stamps = sorted(set(draw(st.lists(st.integers(0, 12_000), min_size=1, max_size=14))))
    calls = [make_call(f"id{i:02}", ms, delay_ms=delay, leading=leading, keep=keep,
                       max_wait_ms=max_wait, collect=collect) for i, ms in enumerate(stamps)]
    # Calls are read in order, in batches, each batch some time after its last call was made.
    cuts = draw(st.lists(st.booleans(), min_size=len(calls), max_size=len(calls)))
    lags = draw(st.lists(st.integers(0, 4_000), min_size=len(calls), max_size=len(calls)))
    replays = draw(st.lists(st.integers(0, len(calls) - 1), max_size=4))
    return {"calls": calls, "cuts": cuts, "lags": lags, "replays": replays, "delay": delay,
            "max_wait": max_wait, "leading": leading, "keep": keep, "collect": collect}


@settings(max_examples=500, deadline=None)
@given(mode_histories())
def test_modes_follow_the_event_time_model_however_calls_are_batched(
        history: dict[str, Any]) -> None:
    calls: list[Call] = history["calls"]
    retention = 10**12  # markers outlive the test
    key = KeyLog()  # a replay sends its execution again: the very same record, or it fails

    batches: list[list[int]] = [[]]
    for i, cut in enumerate(history["cuts"]):
        batches[-1].append(i)
        if cut:
            batches.append([])
    batches = [b for b in batches if b]
    now = 0
    replays = list(history["replays"])
    for number, batch in enumerate(batches):
        # Like PartitionTask: read the batch, fire what it made due at once, then the timer up
        # to the horizon (every call made before it is read).
        now = max(now, calls[batch[-1]].submitted_ms + history["lags"][batch[-1]])
        for i in batch:
            if due_before(key.slot, calls[i], now):
                key.apply(fire_if_due(key.slot, now, retention))
            key.apply(accept(key.slot, calls[i], now, retention, fire_due=False))
        if replays and replays[0] <= batch[-1]:  # a redelivery changes nothing new
            before = key.slot
            key.apply(accept(key.slot, calls[replays.pop(0)], now, retention, fire_due=False))
            assert key.slot is before
        if fires_when_read(key.slot):
            key.apply(fire_if_due(key.slot, now, retention))
        later = batches[number + 1] if number + 1 < len(batches) else None
        horizon = min(now, calls[later[0]].submitted_ms - 1) if later else now
        if key.slot is not None and key.slot.call is not None and key.slot.due_ms <= horizon:
            key.apply(tick(key.slot, key.slot.timer_id, now, retention))
    if key.slot is not None and key.slot.call is not None:  # the timer, once time has passed
        key.apply(tick(key.slot, key.slot.timer_id, max(now, key.slot.due_ms), retention))

    model = reference(calls, history["delay"], history["max_wait"], history["leading"],
                      history["keep"], history["collect"])
    runs = [(e.call.id, e.due_ms, e.call.collected) for e in key.sent.values()]
    assert runs == model.runs
    if history["collect"]:  # every argument ran, once, in order
        assert [a for _, _, collected in runs for a in collected or []] == [c.id for c in calls]
    for execution in key.sent.values():
        assert execution.fired_ms >= execution.due_ms
        assert execution.call.args == [execution.call.id]  # the runner's own arguments
    assert key.outcomes() == model.outcome
