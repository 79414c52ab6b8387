"""Time series for the console's charts: per second, for the last hour, of one task or of the
whole pipeline.

A ``Series`` is a ring of ``SPAN_S`` one-second slots: counts of calls, deferrals, fires and
failures, the pending count sampled from the changelog, and fire lateness as a sparse
histogram, so that percentiles over any range of seconds can be merged from it. A slot's
histogram (one per LATENESS_S seconds) is a dict while it is being written and is packed into
bytes after, so a series takes about 130 KB, and up to about 400 KB when its task fires all
hour with widely spread lateness, whatever the event rate. Slots are filled by the events' own
timestamps, so the history the console reads on start is charted as it happened.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

# An hour of one-second slots: the longest range a chart offers.
SPAN_S = 3600
# Lateness is kept per period of this many seconds (the finest point of a 15-minute chart):
# a histogram per second would take 5 times the memory and time.
LATENESS_S = 5
# Points a chart gets, whatever its range: 5 s apart over 15 minutes, 20 s over an hour.
POINTS = 180
# Lateness histogram: exact below EXACT_MS, then SUB_BINS bins per power of two (1.6 % wide).
EXACT_MS = 128
SUB_BINS = 64
# About 35 years: a later lateness (a foreign writer's event) is binned as this.
MAX_LATENESS_MS = 2**40
COUNTERS = ("calls", "deferrals", "fires", "failed")
# A packed histogram bin: its index above COUNT_BITS bits of count.
COUNT_BITS = 20
Histogram = dict[int, int]


def pack(histogram: Histogram) -> bytes:
    most = (1 << COUNT_BITS) - 1
    return array("I", [(key << COUNT_BITS) | min(n, most)
                       for key, n in histogram.items()]).tobytes()


def unpack(packed: bytes | Histogram | None) -> Histogram:
    if packed is None or isinstance(packed, dict):
        return packed or {}
    return merge({}, packed)


def merge(into: Histogram, packed: bytes | Histogram | None) -> Histogram:
    """``into`` with the counts of ``packed`` added."""
    if isinstance(packed, dict):
        for key, n in packed.items():
            into[key] = into.get(key, 0) + n
    elif packed:
        values = array("I")
        values.frombytes(packed)
        mask = (1 << COUNT_BITS) - 1
        for value in values:
            key = value >> COUNT_BITS
            into[key] = into.get(key, 0) + (value & mask)
    return into


def lateness_bin(ms: int) -> int:
    """The histogram bin of a lateness in ms (a negative one counts as 0: clocks differ; one
    over MAX_LATENESS_MS as that, so that every bin packs)."""
    ms = min(ms, MAX_LATENESS_MS)
    if ms < EXACT_MS:
        return max(ms, 0)
    octave = ms.bit_length() - 1  # 2**octave <= ms
    shift = octave - SUB_BINS.bit_length() + 1
    return EXACT_MS + (octave - EXACT_MS.bit_length() + 1) * SUB_BINS + (ms >> shift) - SUB_BINS


def bin_value(index: int) -> int:
    """The smallest lateness in ms of a bin: what a percentile falling in it reports."""
    if index < EXACT_MS:
        return index
    octave, sub = divmod(index - EXACT_MS, SUB_BINS)
    octave += EXACT_MS.bit_length() - 1
    return (SUB_BINS + sub) << (octave - SUB_BINS.bit_length() + 1)


def histogram_percentile(histogram: Histogram, q: float) -> int | None:
    """The nearest-rank percentile of a histogram's values (None when empty)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = min(total, max(1, int(q * total + 0.999999)))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bin_value(index)
    raise AssertionError("unreachable: the ranks add up to the total")


@dataclass(frozen=True)
class Totals:
    """A range of seconds summed: counts, the latest pending sample, lateness merged."""

    counts: dict[str, int]
    pending: int | None
    lateness: Histogram


class Series:
    """One scope's last hour: counts second by second, lateness by LATENESS_S periods. Not
    thread-safe: the model locks."""

    def __init__(self) -> None:
        self._second = array("q", [-1]) * SPAN_S  # which epoch second each slot holds
        self._counts = {name: array("I", [0]) * SPAN_S for name in COUNTERS}
        self._pending = array("i", [-1]) * SPAN_S  # -1: not sampled in that second
        periods = SPAN_S // LATENESS_S
        self._period = array("q", [-1]) * periods  # which period each lateness slot holds
        # A dict for the period being written (``_hot``), packed bytes for the others.
        self._lateness: list[Histogram | bytes | None] = [None] * periods
        self._hot = 0

    def _slot(self, second: int) -> int | None:
        """The slot of ``second``, emptied if it held an older one; None if it is older than
        the hour the ring holds."""
        index = second % SPAN_S
        held = self._second[index]
        if held == second:
            return index
        if held > second:
            return None
        self._second[index] = second
        for counts in self._counts.values():
            counts[index] = 0
        self._pending[index] = -1
        return index

    def count(self, ts_ms: int, name: str, lateness_ms: int | None = None) -> None:
        index = self._slot(ts_ms // 1000)
        if index is None:
            return
        self._counts[name][index] += 1
        if lateness_ms is not None:
            self._add_lateness(ts_ms // 1000 // LATENESS_S, lateness_bin(lateness_ms))

    def _add_lateness(self, period: int, key: int) -> None:
        index = period % len(self._period)
        if self._period[index] != period:
            if self._period[index] > period:
                return  # older than the hour
            self._period[index], self._lateness[index] = period, None
        if index != self._hot:
            hot = self._lateness[self._hot]
            if isinstance(hot, dict):
                self._lateness[self._hot] = pack(hot)
            self._hot = index
        histogram = self._lateness[index] = unpack(self._lateness[index])
        histogram[key] = histogram.get(key, 0) + 1

    def sample_pending(self, ts_ms: int, value: int) -> None:
        index = self._slot(ts_ms // 1000)
        if index is not None:
            self._pending[index] = value

    def totals(self, first: int, last: int) -> Totals:
        """Seconds ``first`` to ``last`` (epoch seconds, both included); lateness of the
        LATENESS_S periods they touch."""
        counts = dict.fromkeys(COUNTERS, 0)
        pending: int | None = None
        first = max(first, last - SPAN_S + 1)
        for second in range(first, last + 1):
            index = second % SPAN_S
            if self._second[index] != second:
                continue
            for name in COUNTERS:
                counts[name] += self._counts[name][index]
            if self._pending[index] >= 0:
                pending = self._pending[index]
        lateness: Histogram = {}
        for period in range(first // LATENESS_S, last // LATENESS_S + 1):
            index = period % len(self._period)
            if self._period[index] == period:
                merge(lateness, self._lateness[index])
        return Totals(counts, pending, lateness)

    def chart(self, now_ms: int, span_s: int) -> dict[str, Any]:
        """POINTS points over the last ``span_s`` complete seconds: rates per second, the
        pending count, lateness p50 and p99 (None where nothing was seen)."""
        step = max(1, span_s // POINTS)
        last = now_ms // 1000 - 1
        first = last - step * POINTS + 1
        points: dict[str, list[Any]] = {name: [] for name in (*COUNTERS, "pending", "p50",
                                                                "p99")}
        for i in range(POINTS):
            totals = self.totals(first + i * step, first + (i + 1) * step - 1)
            for name in COUNTERS:
                points[name].append(totals.counts[name] / step)
            points["pending"].append(totals.pending)
            points["p50"].append(histogram_percentile(totals.lateness, 0.5))
            points["p99"].append(histogram_percentile(totals.lateness, 0.99))
        return {"start_ms": first * 1000, "step_ms": step * 1000, **points}
