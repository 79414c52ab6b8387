// The overview (the pipeline's charts and the tasks table) and the per-task view.
import { drawCharts } from "./charts.js";
import { $, el, fill, row, taskLink } from "./dom.js";
import { count, countdown, duration, rate } from "./format.js";
import { eventRows, executionRows, pendingRows } from "./lists.js";

function num(text) {
  return el("td", text, "num");
}

function taskRow(t, nowMs) {
  const tr = row([taskLink(t.task), num(count(t.pending)), num(countdown(t.next_due_ms, nowMs)),
    num(rate(t.calls_per_s)), num(rate(t.deferrals_per_s)),
    num(t.collapse === null ? "–" : `${Math.round(t.collapse * 100)}%`),
    num(rate(t.fires_per_s)), num(duration(t.lateness_p50_ms)), num(duration(t.lateness_p99_ms)),
    num(count(t.succeeded)), num(count(t.failed)), num(count(t.cancelled))]);
  tr.dataset.task = t.task;
  if (t.failed) tr.cells[10].classList.add("bad");
  return tr;
}

export function renderOverview(s, redrawCharts) {
  fill($("tasks").tBodies[0], s.tasks.map((t) => taskRow(t, s.now_ms)),
    "No tasks yet: they show once the console reads their first event or pending call.");
  drawCharts($("overview-charts"), s.chart, redrawCharts);
}

const TILES = [
  ["pending", "pending", count], ["calls_per_s", "calls/s", rate],
  ["deferrals_per_s", "deferrals/s", rate], ["fires_per_s", "fires/s", rate],
  ["lateness_p99_ms", "lateness p99", duration], ["succeeded", "succeeded", count],
  ["failed", "failed", count], ["cancelled", "cancelled", count],
];

export function renderTask(s, scope, redraw, redrawCharts) {
  $("task-title").textContent = scope;
  const stats = s.tasks.find((t) => t.task === scope);
  $("task-tiles").replaceChildren(...TILES.map(([field, label, format]) => {
    const tile = el("div", null, "tile");
    tile.dataset.field = field;
    tile.append(el("b", stats ? format(stats[field]) : "–"), el("span", label));
    return tile;
  }));
  drawCharts($("task-charts"), s.chart, redrawCharts);
  pendingRows($("task-pending").tBodies[0], s.pending, s.now_ms, redraw);
  executionRows($("task-executions").tBodies[0], s.executions, s.now_ms);
  eventRows($("task-events").tBodies[0], s.events);
  const search = `?scope=${encodeURIComponent(scope)}`;
  for (const [id, section, page] of [["task-all-pending", "pending", s.pending],
    ["task-all-executions", "executions", s.executions], ["task-all-events", "events", s.events]]) {
    const link = $(id);
    link.href = `#/${section}${search}`;
    link.textContent = `all ${count(page.total)} →`;
  }
}
