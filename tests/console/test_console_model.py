"""The console's live model, fed by hand: rates, lateness, chains, bounds, filters."""

from __future__ import annotations

import dataclasses
from typing import Any

from cfstream.console import state
from cfstream.console.state import Model, percentile
from cfstream.processor.pending import Pending
from cfstream.wire import Call, Collect, Modes

NOW = 1_800_000_000_000
TASK = "app:notify"


def ev(kind: str, execution_id: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "id": execution_id, "task": TASK, "defer_key": "u1",
            "ts_ms": ts, **extra}


def pending(execution_id: str, due_ms: int, task: str = TASK, key: str = "u1") -> Pending:
    call = Call(id=execution_id, task=task, args=["<b>x</b>"], kwargs={}, submitted_ms=NOW,
                delay_ms=1000, defer_key=key)
    return Pending(call, due_ms, NOW)


def test_a_burst_collapsing_into_one_run_shows_as_rates_and_a_chain() -> None:
    model = Model()
    for i in range(5):  # five calls of one key: four replaced, the last runs
        model.add_event(ev("scheduled", f"c{i}", NOW - 5000 + i, due_ms=NOW - 3000 + i))
        if i:
            model.add_event(ev("deferred", f"c{i - 1}", NOW - 5000 + i, successor=f"c{i}",
                               reason="replaced"))
    model.add_event(ev("started", "c4", NOW - 2990, due_ms=NOW - 2996, fired_ms=NOW - 2992))
    model.add_event(ev("succeeded", "c4", NOW - 2980, result="done"))

    view = model.snapshot(NOW, story="c0")
    [row] = view["tasks"]
    assert row["calls_per_s"] == 5 / 60
    assert row["deferrals_per_s"] == 4 / 60
    assert row["collapse"] == 0.8
    assert row["fires_per_s"] == 1 / 60
    assert row["lateness_p50_ms"] == row["lateness_p99_ms"] == 4
    assert row["succeeded"] == 1
    story = view["story"]
    assert [step["id"] for step in story["steps"]] == ["c0", "c1", "c2", "c3", "c4"]
    assert story["status"] == "succeeded"
    assert story["outcome"]["result"] == "done"


def test_rates_only_count_the_last_minute_and_totals_everything() -> None:
    model = Model()
    model.add_event(ev("failed", "old", NOW - state.RATE_WINDOW_MS - 1, error={"type": "E"}))
    model.add_event(ev("scheduled", "new", NOW - 10, due_ms=NOW))
    [row] = model.snapshot(NOW)["tasks"]
    assert row["calls_per_s"] == 1 / 60
    assert row["failed"] == 1


def test_an_event_read_twice_counts_once() -> None:
    model = Model()
    event = ev("scheduled", "a", NOW, due_ms=NOW + 1)
    assert model.add_event(event)
    assert not model.add_event(dict(event))
    assert model.snapshot(NOW)["tasks"][0]["calls_per_s"] == 1 / 60


def test_stories_are_kept_for_a_bounded_number_of_executions(monkeypatch: Any) -> None:
    monkeypatch.setattr(state, "MAX_EXECUTIONS", 3)
    model = Model()
    for i in range(5):
        model.add_event(ev("scheduled", f"e{i}", NOW + i, due_ms=NOW))
    assert not model.snapshot(NOW, story="e0")["story"]["known"]
    assert model.snapshot(NOW, story="e4")["story"]["known"]


def test_invalid_records_count_as_dead_letters_without_a_task() -> None:
    model = Model()
    model.add_event({"v": 1, "type": "invalid", "id": None, "reason": "not json", "ts_ms": NOW})
    view = model.snapshot(NOW)
    assert view["dead_letters"] == 1
    assert view["tasks"] == []


def test_pending_calls_are_searched_by_task_and_key_and_counted_per_task() -> None:
    model = Model()
    model.set_pending([pending("p1", NOW + 1000), pending("p2", NOW + 500, key="u2"),
                       pending("p3", NOW + 9000, task="app:other")], NOW)
    view = model.snapshot(NOW, task="NOTIFY", key="u2")
    assert [c["id"] for c in view["pending"]["calls"]] == ["p2"]
    assert view["pending"]["calls"][0]["args"] == ["<b>x</b>"]
    assert (view["pending"]["total"], view["pending"]["matching"]) == (3, 1)
    rows = {row["task"]: row for row in view["tasks"]}
    assert (rows[TASK]["pending"], rows[TASK]["next_due_ms"]) == (2, NOW + 500)
    assert model.snapshot(NOW, story="p3")["story"]["status"] == "pending"


def test_a_failure_story_carries_the_traceback() -> None:
    model = Model()
    model.add_event(ev("started", "f", NOW, due_ms=NOW, fired_ms=NOW))
    model.add_event(ev("failed", "f", NOW + 5,
                       error={"type": "ValueError", "message": "m", "traceback": "Trace"}))
    story = model.snapshot(NOW, story="f")["story"]
    assert story["status"] == "failed"
    assert story["outcome"]["error"]["traceback"] == "Trace"


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile(list(range(1, 101)), 0.5) == 50
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([7], 0.99) == 7


def test_a_call_the_events_show_as_gone_is_not_pending_even_before_the_changelog_says_so() -> None:
    model = Model()
    model.set_pending([pending("ran", NOW - 10), pending("waits", NOW + 10)], NOW)
    model.add_event(ev("started", "ran", NOW, due_ms=NOW - 10, fired_ms=NOW - 5))
    view = model.snapshot(NOW, story="ran")
    assert [c["id"] for c in view["pending"]["calls"]] == ["waits"]
    assert view["tasks"][0]["pending"] == 1
    assert view["story"]["steps"][0]["pending"] is None


def test_pending_calls_show_their_deferring_modes() -> None:
    model = Model()
    plain = pending("p1", NOW + 1000)
    moded = Pending(Call(id="p2", task=TASK, args=[], kwargs={}, submitted_ms=NOW,
                         delay_ms=1000, defer_key="u1",
                         modes=Modes(leading=True, keep="first")),
                    NOW + 500, NOW)
    collecting = Pending(Call(id="p3", task=TASK, args=[2], kwargs={}, submitted_ms=NOW,
                              delay_ms=1000, defer_key="u1",
                              modes=Modes(collect=Collect(50, 999)),
                              collected=[1, 2]), NOW + 700, NOW)
    one_at_a_time = Call(id="p4", task=TASK, args=[], kwargs={}, submitted_ms=NOW,
                         delay_ms=1000, defer_key="u2", modes=Modes(if_running="after"))
    held = Pending(one_at_a_time, NOW + 800, NOW, running_id="r1")
    free = Pending(dataclasses.replace(one_at_a_time, id="p5", defer_key="u3"), NOW + 900, NOW)
    model.set_pending([plain, moded, collecting, held, free], NOW)
    rows = {c["id"]: c["modes"] for c in model.snapshot(NOW)["pending"]["calls"]}
    assert rows == {"p1": "", "p2": "leading, keep=first", "p3": "collect 2/50 calls",
                    "p4": "after r1 ends", "p5": "if_running=after"}
