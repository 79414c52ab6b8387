"""What the run should have done against what it did: pure functions over plain data.

Inputs: the calls the producer submitted (in submit order), the workers' record lines (what ran),
the events read from the events topic, and how often each id appears on the executions topic
(for diagnosis: fired twice by the processor, or delivered twice to workers).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfstream.worker.execute import LOST

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Submitted:
    order: int
    id: str
    kind: str  # "all" (defer=True), "key" (key function) or "delay" (delay only)
    key: str
    value: int
    submitted_ms: int


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    task: str
    key: str
    value: str
    file: str


@dataclass(slots=True)
class Started:
    ts_ms: int
    due_ms: int
    fired_ms: int
    worker: str


@dataclass(slots=True)
class IdEvents:
    """What the events topic says about one execution id."""

    types: list[str] = field(default_factory=list)
    started: list[Started] = field(default_factory=list)
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (successor, reason)
    first_ts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the error type of each failed event

    def add(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type"))
        self.types.append(kind)
        ts = int(event.get("ts_ms") or 0)
        self.first_ts.setdefault(kind, ts)
        if kind == "started":
            self.started.append(Started(ts, int(event.get("due_ms") or 0),
                                        int(event.get("fired_ms") or 0),
                                        str(event.get("worker", ""))))
        elif kind == "deferred":
            self.deferred.append((str(event.get("successor")), str(event.get("reason", ""))))
        elif kind == "failed":
            self.errors.append(str((event.get("error") or {}).get("type", "")))

    @property
    def cut_short(self) -> bool:
        """Started, then reported failed because its worker was lost mid-run: cfstream accounts
        for it (the run is not repeated, by the delivery guarantees), so it is not lost."""
        return bool(self.started) and LOST in self.errors

    @property
    def resolved(self) -> bool:
        return bool(self.deferred) or any(t in TERMINAL for t in self.types)


@dataclass(frozen=True, slots=True)
class Disruption:
    kind: str  # "processor", "worker", "broker", "crash"
    target: str
    ts_ms: int  # when the process was killed (broker: stop began)
    back_ms: int  # when it was started again


def read_records(directory: Path) -> tuple[list[Record], int]:
    """Every complete record line; also how many lines were malformed (a kill mid-write)."""
    records: list[Record] = []
    bad = 0
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes().decode(errors="replace")
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        elif lines:
            bad += 1  # a last line without its newline
            lines.pop()
        for line in lines:
            parts = line.split(" ")
            if len(parts) != 4:
                bad += 1
                continue
            records.append(Record(parts[0], parts[1], parts[2], parts[3], path.name))
    return records, bad


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def reconcile(calls: list[Submitted], records: list[Record], events: dict[str, IdEvents],
              fired: Counter[str], disruptions: list[Disruption],
              undelivered: set[str], run_end_ms: int) -> dict[str, Any]:
    """The figures of the run and the ids behind every violation."""
    runs = Counter(r.id for r in records)
    by_id = {c.id: c for c in calls}
    latest: dict[tuple[str, str], Submitted] = {}
    for c in calls:
        if c.kind != "delay":
            latest[(c.kind, c.key)] = c  # calls are in submit order: the last one wins
    latest_ids = {c.id for c in latest.values()}

    must_run = latest_ids | {c.id for c in calls if c.kind == "delay"}
    deferred_ids = {c.id for c in calls if c.id in events and events[c.id].deferred}
    lost: list[str] = []
    cut_short: list[str] = []
    for c in calls:
        if c.id in runs or c.id in undelivered:
            continue
        if c.id in events and events[c.id].cut_short:
            cut_short.append(c.id)
            continue
        if c.id in must_run or c.id not in deferred_ids:
            lost.append(c.id)
    duplicated = sorted(i for i, n in runs.items() if n > 1)
    superseded_ran = sorted(i for i in deferred_ids if i in runs)
    # A deferred event after the call had started: the execution was redelivered (its worker
    # died before committing) and the redelivery was merged into a later one in a backlog. The
    # call ran once, legitimately; cfstream then also reported it deferred.
    deferred_after_start = sorted(
        i for i in superseded_ran
        if "started" in events[i].first_ts
        and events[i].first_ts["deferred"] >= events[i].first_ts["started"])
    latest_deferred = sorted(i for i in latest_ids if i in deferred_ids)
    unknown_runs = sorted(i for i in runs if i not in by_id)
    wrong_value = sorted(
        r.id for r in records
        if r.id in by_id and by_id[r.id].kind != "all" and r.value != str(by_id[r.id].value)
    )

    reasons = Counter(reason for i in deferred_ids for _, reason in events[i].deferred[:1])

    # Lateness: the first start of each id against its due time.
    lateness: list[tuple[int, int, int, str]] = []  # (due_ms, lateness_ms, started ts, id)
    for c in calls:
        info = events.get(c.id)
        if info is not None and info.started:
            first = min(info.started, key=lambda s: s.ts_ms)
            lateness.append((first.due_ms, first.ts_ms - first.due_ms, first.ts_ms, c.id))
    lateness.sort()
    late_values = [x[1] / 1000 for x in lateness]

    windows = _disruption_windows(disruptions, lateness, run_end_ms)

    return {
        "submitted": len(calls),
        "undelivered": len(undelivered),
        "must_run": len(must_run),
        "executed": len(runs),
        "record_lines": sum(runs.values()),
        "deferred": len(deferred_ids),
        "deferred_by_reason": dict(reasons),
        "lost": len(lost),
        "cut_short": len(cut_short),
        "duplicated": len(duplicated),
        "superseded_ran": len(superseded_ran) - len(deferred_after_start),
        "deferred_after_start": len(deferred_after_start),
        "latest_deferred": len(latest_deferred),
        "unknown_runs": len(unknown_runs),
        "wrong_value": len(wrong_value),
        "lateness_s": {
            "p50": percentile(late_values, 0.5), "p99": percentile(late_values, 0.99),
            "max": max(late_values, default=0.0),
        },
        "windows": windows,
        "ids": {
            "lost": lost, "cut_short": cut_short, "duplicated": duplicated,
            "superseded_ran": sorted(set(superseded_ran) - set(deferred_after_start)),
            "deferred_after_start": deferred_after_start,
            "latest_deferred": latest_deferred, "unknown_runs": unknown_runs,
            "wrong_value": wrong_value,
        },
        "diagnosis": {
            "lost": [_describe(i, by_id, events, fired, runs, records) for i in lost[:15]],
            "duplicated": [_describe(i, by_id, events, fired, runs, records, disruptions)
                           for i in duplicated[:15]],
            "superseded_ran": [_describe(i, by_id, events, fired, runs, records, disruptions)
                               for i in sorted(set(superseded_ran)
                                               - set(deferred_after_start))[:15]],
            "deferred_after_start": [
                _describe(i, by_id, events, fired, runs, records, disruptions)
                for i in deferred_after_start[:5]],
            "most_late": [
                {"id": i, "key": by_id[i].key, "kind": by_id[i].kind, "due_ms": due,
                 "late_s": late / 1000, "workers": [s.worker for s in events[i].started]}
                for due, late, _, i in sorted(lateness, key=lambda x: -x[1])[:5]],
            "duplicated_fired_twice": sum(1 for i in duplicated if fired.get(i, 0) > 1),
            "duplicated_fired_once": sum(1 for i in duplicated if fired.get(i, 0) <= 1),
            "lost_never_fired": sum(1 for i in lost if fired.get(i, 0) == 0),
            "lost_unresolved": sum(1 for i in lost
                                   if i not in events or not events[i].resolved),
        },
    }


def _disruption_windows(disruptions: list[Disruption],
                        lateness: list[tuple[int, int, int, str]],
                        run_end_ms: int) -> list[dict[str, Any]]:
    """Per disruption: the worst lateness of calls due from 1 s before it until the next one
    (at most 60 s), and when lateness was last above 1 s in that window (relative to the kill)."""
    ordered = sorted(disruptions, key=lambda d: d.ts_ms)
    out = []
    for n, d in enumerate(ordered):
        start = d.ts_ms - 1000
        end = min(d.ts_ms + 60_000, run_end_ms)
        if n + 1 < len(ordered):
            end = min(end, ordered[n + 1].ts_ms)
        inside = [x for x in lateness if start <= x[0] < end]
        worst = max((x[1] for x in inside), default=0)
        over = [x[2] for x in inside if x[1] > 1000]
        out.append({
            "kind": d.kind, "target": d.target, "at_ms": d.ts_ms,
            "down_s": (d.back_ms - d.ts_ms) / 1000,
            "calls": len(inside), "worst_extra_delay_s": worst / 1000,
            "late_until_s": (max(over) - d.ts_ms) / 1000 if over else 0.0,
        })
    return out


def _describe(execution_id: str, by_id: dict[str, Submitted], events: dict[str, IdEvents],
              fired: Counter[str], runs: Counter[str], records: list[Record],
              disruptions: list[Disruption] | None = None) -> dict[str, Any]:
    call = by_id.get(execution_id)
    info = events.get(execution_id)
    out: dict[str, Any] = {
        "id": execution_id,
        "call": None if call is None else {"order": call.order, "kind": call.kind,
                                           "key": call.key, "submitted_ms": call.submitted_ms},
        "events": None if info is None else info.types,
        "deferred": None if info is None else info.deferred,
        "started": None if info is None else [(s.ts_ms, s.due_ms, s.worker)
                                              for s in info.started],
        "fired_records": fired.get(execution_id, 0),
        "runs": runs.get(execution_id, 0),
        "record_files": [r.file for r in records if r.id == execution_id],
    }
    if disruptions and info is not None and info.started:
        first = min(s.ts_ms for s in info.started)
        near = [d for d in disruptions if abs(d.ts_ms - first) < 30_000]
        out["disruptions_within_30s"] = [(d.kind, d.target, d.ts_ms - first) for d in near]
    return out


def summarize_rejoins(values: list[float | None]) -> dict[str, Any]:
    done = [v for v in values if v is not None]
    return {
        "count": len(values), "timed_out": len(values) - len(done),
        "median_s": round(statistics.median(done), 1) if done else None,
        "max_s": round(max(done), 1) if done else None,
        "all_s": [None if v is None else round(v, 1) for v in values],
    }

