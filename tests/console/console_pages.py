"""What the browser tests read off the console's page: rows, chart values, and where the
timeline put its marks, in pixels and in the times they stand for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TIMEOUT_MS = 30_000
# How far a mark may sit from where its time falls: half a pixel of rounding, either side.
PIXEL = 1.0


def pending_row(page: Any, execution_id: str) -> Any:
    return page.locator(f'#pending-table tr[data-id="{execution_id}"]')


def chart_count(page: Any, scope: str, chart: str, series: str) -> int:
    """How many events a chart's line counts over its range."""
    found = page.locator(f'#{scope}-charts figure[data-chart="{chart}"] '
                         f'path[data-series="{series}"]')
    return int(found.get_attribute("data-count", timeout=TIMEOUT_MS))


def wait_for_chart_count(page: Any, scope: str, series: str, at_least: int) -> None:
    page.wait_for_function(
        """([scope, series, n]) => {
             const line = document.querySelector(
               `#${scope}-charts figure[data-chart="throughput"] path[data-series="${series}"]`);
             return line !== null && Number(line.dataset.count) >= n;
           }""", arg=[scope, series, at_least], timeout=TIMEOUT_MS)


@dataclass(frozen=True)
class Mark:
    kind: str
    start: int
    end: int
    left: float  # pixels from the timeline's left edge
    right: float
    id: str | None
    expected_left: float  # where its start time falls on the axis
    expected_right: float


MARKS_JS = """(selector) => {
  const svg = document.querySelector("#timeline");
  const box = svg.getBoundingClientRect();
  const d = svg.dataset;
  const x = (t) => Number(d.x0) + (t - Number(d.t0)) / (Number(d.t1) - Number(d.t0)) *
    (Number(d.x1) - Number(d.x0));
  return [...svg.querySelectorAll(selector)].map((n) => {
    const r = n.getBoundingClientRect();
    return {kind: n.dataset.kind, start: Number(n.dataset.start), end: Number(n.dataset.end),
            left: r.left - box.left, right: r.right - box.left, id: n.dataset.id || null,
            expected_left: x(Number(n.dataset.start)), expected_right: x(Number(n.dataset.end))};
  });
}"""


def marks(page: Any, kind: str) -> list[Mark]:
    page.locator("#timeline").wait_for(timeout=TIMEOUT_MS)
    return [Mark(**m) for m in page.evaluate(MARKS_JS, f'.mark[data-kind="{kind}"]')]


def assert_spans(found: Mark, start_ms: int, end_ms: int) -> None:
    """A bar from ``start_ms`` to ``end_ms``: its times are those, and its edges where the
    axis puts them (at least 2 px wide, so that a short run shows)."""
    assert (found.start, found.end) == (start_ms, end_ms), found
    assert abs(found.left - found.expected_left) <= PIXEL, found
    width = max(2.0, found.expected_right - found.expected_left)
    assert abs(found.right - (found.expected_left + width)) <= PIXEL, found


def assert_at(found: Mark, ts_ms: int) -> None:
    """A mark at ``ts_ms``."""
    assert found.start == ts_ms, found
    assert abs((found.left + found.right) / 2 - found.expected_left) <= PIXEL, found
