"""The console's live model, fed by hand: rates, lateness, chains, bounds, filters."""

from __future__ import annotations

import dataclasses
from typing import Any

from cfstream.console import executions, series, state
from cfstream.console.series import bin_value, histogram_percentile, lateness_bin
from cfstream.console.state import Model
from cfstream.console.view import View
from cfstream.processor.pending import Pending
from cfstream.wire import Call, Collect, Modes

NOW = 1_800_000_000_000
TASK = "app:notify"


def ev(kind: str, execution_id: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "id": execution_id, "task": TASK, "defer_key": "u1",
            "ts_ms": ts, **extra}


def story(model: Model, execution_id: str) -> Any:
    return model.snapshot(NOW, View(section="story", story=execution_id))["story"]


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

    view = model.snapshot(NOW, View(section="story", story="c0"))
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
    model.add_event(ev("failed", "old", NOW - state.RATE_WINDOW_S * 1000 - 1,
                       error={"type": "E"}))
    model.add_event(ev("scheduled", "new", NOW - 10, due_ms=NOW))
    [row] = model.snapshot(NOW)["tasks"]
    assert row["calls_per_s"] == 1 / 60
    assert row["failed"] == 1


def test_an_event_read_twice_counts_once() -> None:
    model = Model()
    event = ev("scheduled", "a", NOW - 500, due_ms=NOW + 1)
    assert model.add_event(event)
    assert not model.add_event(dict(event))
    assert model.snapshot(NOW)["tasks"][0]["calls_per_s"] == 1 / 60


def test_stories_are_kept_for_a_bounded_number_of_executions(monkeypatch: Any) -> None:
    monkeypatch.setattr(executions, "MAX_EXECUTIONS", 3)
    model = Model()
    for i in range(5):
        model.add_event(ev("scheduled", f"e{i}", NOW + i, due_ms=NOW))
    assert not story(model, "e0")["known"]
    assert story(model, "e4")["known"]


def test_invalid_records_count_as_dead_letters_without_a_task() -> None:
    model = Model()
    model.add_event({"v": 1, "type": "invalid", "id": None, "reason": "not json", "ts_ms": NOW})
    view = model.snapshot(NOW, View(section="dead-letters"))
    assert view["summary"]["dead_letters"] == 1
    assert [e["reason"] for e in view["dead_letters"]["rows"]] == ["not json"]
    assert view["tasks"] == []


def test_pending_calls_are_searched_by_task_and_key_and_counted_per_task() -> None:
    model = Model()
    model.set_pending([pending("p1", NOW + 1000), pending("p2", NOW + 500, key="u2"),
                       pending("p3", NOW + 9000, task="app:other")], NOW)
    view = model.snapshot(NOW, View(section="pending", task="NOTIFY", key="u2"))
    assert [c["id"] for c in view["pending"]["rows"]] == ["p2"]
    assert view["pending"]["rows"][0]["args"] == ["<b>x</b>"]
    assert (view["pending"]["all"], view["pending"]["total"]) == (3, 1)
    rows = {row["task"]: row for row in view["tasks"]}
    assert (rows[TASK]["pending"], rows[TASK]["next_due_ms"]) == (2, NOW + 500)
    assert story(model, "p3")["status"] == "pending"


def test_a_failure_story_carries_the_traceback() -> None:
    model = Model()
    model.add_event(ev("started", "f", NOW, due_ms=NOW, fired_ms=NOW))
    model.add_event(ev("failed", "f", NOW + 5,
                       error={"type": "ValueError", "message": "m", "traceback": "Trace"}))
    failure = story(model, "f")
    assert failure["status"] == "failed"
    assert failure["outcome"]["error"]["traceback"] == "Trace"


def test_percentile_is_nearest_rank_over_the_histogram() -> None:
    assert histogram_percentile({}, 0.5) is None
    exact = {lateness_bin(v): 1 for v in range(1, 101)}
    assert histogram_percentile(exact, 0.5) == 50
    assert histogram_percentile(exact, 0.99) == 99
    assert histogram_percentile({lateness_bin(7): 1}, 0.99) == 7


def test_a_call_the_events_show_as_gone_is_not_pending_even_before_the_changelog_says_so() -> None:
    model = Model()
    model.set_pending([pending("ran", NOW - 10), pending("waits", NOW + 10)], NOW)
    model.add_event(ev("started", "ran", NOW, due_ms=NOW - 10, fired_ms=NOW - 5))
    view = model.snapshot(NOW, View(section="pending"))
    assert [c["id"] for c in view["pending"]["rows"]] == ["waits"]
    assert view["tasks"][0]["pending"] == 1
    assert story(model, "ran")["steps"][0]["pending"] is None


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
    view = model.snapshot(NOW, View(section="pending"))
    rows = {c["id"]: c["modes"] for c in view["pending"]["rows"]}
    assert rows == {"p1": "", "p2": "leading, keep=first", "p3": "collect 2/50 calls",
                    "p4": "after r1 ends", "p5": "if_running=after"}


def test_lateness_bins_are_exact_for_small_values_and_within_two_percent_above() -> None:
    assert [bin_value(lateness_bin(v)) for v in range(series.EXACT_MS)] == list(
        range(series.EXACT_MS))
    assert lateness_bin(-5) == 0
    for value in (128, 129, 1000, 4097, 65_537, 3_600_000, 2**40 + 12345):
        low = bin_value(lateness_bin(value))
        assert low <= value < low * 1.016 + 1
        assert lateness_bin(low) == lateness_bin(value)


def test_charts_count_each_event_in_the_second_it_happened_and_keep_an_hour() -> None:
    model = Model()
    model.add_event(ev("scheduled", "late", NOW - series.SPAN_S * 1000 - 5000, due_ms=NOW))
    for i in range(10):  # 10 calls 7 s ago, 4 of them replaced
        model.add_event(ev("scheduled", f"c{i}", NOW - 7000 + i, due_ms=NOW))
        if i < 4:
            model.add_event(ev("deferred", f"c{i}", NOW - 7000 + i, successor=f"c{i + 1}",
                               reason="replaced"))
    model.add_event(ev("started", "c9", NOW - 3000, due_ms=NOW - 3300, fired_ms=NOW - 3100))
    model.set_pending([pending("w", NOW + 60_000)], NOW - 2000)

    for scope in ("overview", "task"):
        chart = model.snapshot(NOW, View(section=scope, scope=TASK))["chart"]
        assert chart["step_ms"] == 5000 and len(chart["calls"]) == series.POINTS
        assert chart["start_ms"] + chart["step_ms"] * series.POINTS == NOW
        assert sum(chart["calls"]) * 5 == 10  # the one older than the hour is not charted
        assert chart["calls"][-2] == 2.0  # NOW-7 s is in the point of NOW-10..NOW-5 s
        assert chart["deferrals"][-2] == 0.8
        assert chart["fires"][-1] == 0.2
        assert (chart["p50"][-1], chart["p99"][-1]) == (200, 200)
        assert chart["pending"][-1] == 1 and chart["pending"][-2] is None
    hour = model.snapshot(NOW, View(span_s=3600))["chart"]
    assert hour["step_ms"] == 20_000 and sum(hour["calls"]) * 20 == 10


def test_only_the_most_recently_active_tasks_keep_a_chart(monkeypatch: Any) -> None:
    monkeypatch.setattr(state, "MAX_SERIES", 2)
    model = Model()
    for task in ("a", "b", "c"):
        model.add_event({**ev("scheduled", task, NOW - 2000, due_ms=NOW), "task": task})
    assert model.snapshot(NOW, View(section="task", scope="a"))["chart"] is None
    assert sum(model.snapshot(NOW, View(section="task", scope="c"))["chart"]["calls"]) == 0.2
    assert sum(model.snapshot(NOW)["chart"]["calls"]) == 0.6  # the pipeline counts all


def test_events_are_paged_in_time_order_whatever_order_they_arrive_in() -> None:
    model = Model()
    times = [NOW - 5000, NOW - 1000, NOW - 3000, NOW - 4000, NOW - 2000]
    for i, ts in enumerate(times):  # two writers: out of order
        model.add_event(ev("scheduled" if i % 2 else "started", f"e{i}", ts, due_ms=ts,
                           fired_ms=ts))
    first = model.snapshot(NOW, View(section="events", limit=2))["events"]
    assert [e["ts_ms"] for e in first["rows"]] == [NOW - 1000, NOW - 2000]
    assert (first["total"], first["offset"]) == (5, 0)
    after = first["next"]
    second = model.snapshot(NOW, View.from_query({"section": "events", "limit": "2",
                                                  "after": after}))["events"]
    assert [e["ts_ms"] for e in second["rows"]] == [NOW - 3000, NOW - 4000]
    assert second["offset"] == 2
    third = model.snapshot(NOW, View.from_query({"section": "events", "limit": "2",
                                                 "after": second["next"]}))["events"]
    assert [e["ts_ms"] for e in third["rows"]] == [NOW - 5000] and third["next"] is None
    only = model.snapshot(NOW, View(section="events", type="started", text="E4"))["events"]
    assert [e["id"] for e in only["rows"]] == ["e4"]


def test_executions_are_listed_newest_first_with_where_they_stand() -> None:
    model = Model()
    model.add_event(ev("scheduled", "a", NOW - 9000, due_ms=NOW - 8000))
    model.add_event(ev("started", "a", NOW - 8000, due_ms=NOW - 8000, fired_ms=NOW - 8000))
    model.add_event(ev("retrying", "a", NOW - 7000, next_attempt=2, retry_at_ms=NOW - 6000))
    model.add_event(ev("started", "a", NOW - 6000, attempt=2, due_ms=NOW - 6000,
                       fired_ms=NOW - 6000))
    model.add_event(ev("succeeded", "a", NOW - 5500, attempt=2, result=1))
    model.add_event(ev("scheduled", "b", NOW - 4000, due_ms=NOW + 9000))
    model.add_event(ev("started", "c", NOW - 3000, due_ms=NOW - 3000, fired_ms=NOW - 3000))
    view = model.snapshot(NOW, View(section="executions"))
    rows = [(r["id"], r["status"], r["attempt"]) for r in view["executions"]["rows"]]
    assert rows == [("c", "running", 1), ("b", "pending", 1), ("a", "succeeded", 2)]
    a = view["executions"]["rows"][2]
    assert (a["started_ms"], a["ended_ms"]) == (NOW - 6000, NOW - 5500)
    assert view["summary"]["running"] == 1
    done = model.snapshot(NOW, View(section="executions", status="succeeded"))
    assert [r["id"] for r in done["executions"]["rows"]] == ["a"]


def pages(model: Model, section: str, **query: str) -> list[list[str]]:
    """Every page of ``section``, 2 rows a page, by following each page's cursor."""
    out, after = [], None
    while True:
        q = {"section": section, "limit": "2", **query, **({"after": after} if after else {})}
        listed = model.snapshot(NOW, View.from_query(q))[section]
        out.append([row["id"] for row in listed["rows"]])
        after = listed["next"]
        if after is None:
            return out


def test_pending_calls_are_paged_soonest_first_and_a_page_holds_as_others_come() -> None:
    model = Model()
    model.set_pending([pending(f"p{i}", NOW + due) for i, due in
                       enumerate([5000, 1000, 3000, 4000, 2000])], NOW)
    assert pages(model, "pending") == [["p1", "p4"], ["p2", "p3"], ["p0"]]
    first = model.snapshot(NOW, View(section="pending", limit=2))["pending"]
    assert first["total"] == 5
    # A call that comes in sooner than the page's last does not shift the next page.
    model.set_pending([*(pending(f"p{i}", NOW + due) for i, due in
                         enumerate([5000, 1000, 3000, 4000, 2000])), pending("n", NOW + 500)],
                      NOW)
    second = model.snapshot(NOW, View.from_query({"section": "pending", "limit": "2",
                                                  "after": first["next"]}))["pending"]
    assert [row["id"] for row in second["rows"]] == ["p2", "p3"]
    assert pages(model, "pending", key="u1") == [["n", "p1"], ["p4", "p2"], ["p3", "p0"]]


def test_executions_are_paged_newest_first_by_status() -> None:
    model = Model()
    for i in range(5):
        model.add_event(ev("started", f"x{i}", NOW - 10_000 + i * 1000, due_ms=NOW - 10_000,
                           fired_ms=NOW - 10_000))
        if i % 2 == 0:
            model.add_event(ev("succeeded", f"x{i}", NOW - 9_500 + i * 1000, result=i))
    assert pages(model, "executions") == [["x4", "x3"], ["x2", "x1"], ["x0"]]
    assert pages(model, "executions", status="succeeded") == [["x4", "x2"], ["x0"]]
    assert pages(model, "executions", status="running") == [["x3", "x1"]]


def test_a_held_calls_story_names_the_run_it_waited_for() -> None:
    model = Model()
    model.add_event(ev("started", "r", NOW - 5000, due_ms=NOW - 5000, fired_ms=NOW - 5000))
    model.add_event(ev("scheduled", "h", NOW - 4000, due_ms=NOW - 3000, after="r"))
    model.add_event(ev("succeeded", "r", NOW - 1000, result=None))
    model.add_event(ev("started", "h", NOW - 990, due_ms=NOW - 3000, fired_ms=NOW - 995))
    [step] = story(model, "h")["steps"]
    assert step["blocker"] == {"id": "r", "started_ms": NOW - 5000, "ended_ms": NOW - 1000,
                               "status": "succeeded"}


def test_a_task_view_holds_only_that_tasks_calls() -> None:
    model = Model()
    model.set_pending([pending("p1", NOW + 1000), pending("p2", NOW + 2000, task=TASK + "_x")],
                      NOW)
    model.add_event({**ev("scheduled", "o", NOW - 10, due_ms=NOW), "task": TASK + "_x"})
    view = model.snapshot(NOW, View(section="task", scope=TASK))
    assert [c["id"] for c in view["pending"]["rows"]] == ["p1"]
    assert view["events"]["rows"] == [] and view["executions"]["rows"] == []


def test_a_foreign_writers_absurd_times_are_listed_not_charted_and_break_nothing() -> None:
    """The wire format takes any integer: a lateness of 2**70 ms, or a time of 10**22 ms, once
    made every later lateness fail to pack and the events reader reconnect every 2 s."""
    model = Model()
    model.add_event(ev("started", "huge", NOW - 3000, due_ms=0, fired_ms=2**70))
    model.add_event(ev("scheduled", "future", 10**22, due_ms=NOW))
    for i in range(3):
        model.add_event(ev("started", f"ok{i}", NOW - 2000 - i * 5000, due_ms=NOW - 2200,
                           fired_ms=NOW - 2100))
    chart = model.snapshot(NOW, View(section="overview"))["chart"]
    assert chart["p50"][-1] == 100 and chart["fires"][-1] == 0.4
    assert lateness_bin(2**70) == lateness_bin(series.MAX_LATENESS_MS)
    events = model.snapshot(NOW, View(section="events"))["events"]
    assert {"huge", "future"} <= {e["id"] for e in events["rows"]}
