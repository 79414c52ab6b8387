"""The chaos harness's accounting: what counts as lost, run twice, or cut short by a lost
worker (bench/chaos/reconcile.py, pure functions over plain data)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.chaos.reconcile import IdEvents, Record, Submitted, reconcile


def submitted(order: int, key: str, kind: str = "key") -> Submitted:
    return Submitted(order, f"id{order}", kind, key, order, 1_000 + order)


def events_of(*events: dict[str, Any]) -> IdEvents:
    info = IdEvents()
    for event in events:
        info.add(event)
    return info


STARTED = {"type": "started", "ts_ms": 2_000, "due_ms": 1_900, "fired_ms": 1_950, "worker": "w0"}


def failed(error_type: str) -> dict[str, Any]:
    return {"type": "failed", "ts_ms": 2_500, "error": {"type": error_type, "message": "x"}}


def run(calls: list[Submitted], records: list[Record],
        events: dict[str, IdEvents]) -> dict[str, Any]:
    return reconcile(calls, records, events, Counter(), [], set(), 10_000)


def test_a_run_cut_short_by_a_lost_worker_is_counted_apart_from_lost() -> None:
    calls = [submitted(0, "a"), submitted(1, "b"), submitted(2, "c")]
    events = {"id0": events_of(STARTED, failed("WorkerLost")),
              "id1": events_of(STARTED, failed("ValueError")),
              "id2": events_of(STARTED, {"type": "succeeded", "ts_ms": 2_100})}
    summary = run(calls, [Record("id2", "t", "c", "2", "w0.log")], events)
    assert summary["cut_short"] == 1 and summary["ids"]["cut_short"] == ["id0"]
    # A task's own failure with no record of the run, like a call nobody ran, is lost.
    assert summary["lost"] == 1 and summary["ids"]["lost"] == ["id1"]


def test_a_worker_lost_before_the_run_started_is_still_lost() -> None:
    summary = run([submitted(0, "a")], [], {"id0": events_of(failed("WorkerLost"))})
    assert summary["cut_short"] == 0 and summary["lost"] == 1


def test_a_call_deferred_into_one_that_ran_is_neither_lost_nor_cut_short() -> None:
    calls = [submitted(0, "a"), submitted(1, "a")]
    events = {"id0": events_of({"type": "deferred", "ts_ms": 1_500, "successor": "id1",
                                "reason": "deferred"}),
              "id1": events_of(STARTED, {"type": "succeeded", "ts_ms": 2_100})}
    summary = run(calls, [Record("id1", "t", "a", "1", "w0.log")], events)
    assert (summary["lost"], summary["cut_short"], summary["duplicated"]) == (0, 0, 0)
