// A story as a timeline: the calls of a deferral chain as marks with their quiet periods
// shaded, a held call's wait for the run before it, and each attempt's run and backoff as bars.
import { el } from "./dom.js";
import { duration } from "./format.js";
import { scale, svg, timeAxis, tip } from "./svg.js";

const LANE = 26;
const BAR = 14;
const PAD = { left: 84, right: 16, top: 8, bottom: 22 };

const first = (events, type, attempt) => events.find((e) => e.type === type &&
  (attempt === undefined || (e.attempt || 1) === attempt));

// The spans and marks of a story, in ms, each {lane, kind, start, end, text}.
export function spans(story, nowMs) {
  const items = [];
  const steps = story.steps;
  steps.forEach((step, i) => {
    const scheduled = first(step.events, "scheduled", 1);
    if (!scheduled) return;
    const isLast = i === steps.length - 1;
    const deferred = first(step.events, "deferred");
    const started = first(step.events, "started");
    const cancelled = first(step.events, "cancelled");
    items.push({ lane: "calls", kind: "call", start: scheduled.ts_ms, end: scheduled.ts_ms,
      text: `call ${i + 1} of ${steps.length}: ${step.id}`, id: step.id });
    let quietEnd = isLast ? Math.min(nowMs, scheduled.due_ms) : null;
    if (deferred || cancelled) quietEnd = (deferred || cancelled).ts_ms;
    else if (started) quietEnd = Math.min(started.ts_ms, scheduled.due_ms);
    if (quietEnd !== null && quietEnd >= scheduled.ts_ms) {
      items.push({ lane: "calls", kind: deferred ? "quiet" : "quiet last", start: scheduled.ts_ms,
        end: quietEnd, text: `quiet period ${duration(quietEnd - scheduled.ts_ms)}` +
          (deferred ? ` until ${deferred.reason}` : "") });
    }
    if (isLast) items.push(...runSpans(step, scheduled, nowMs));
  });
  return items;
}

function runSpans(step, scheduled, nowMs) {
  const items = [{ lane: "calls", kind: "due", start: scheduled.due_ms, end: scheduled.due_ms,
    text: "due" }];
  const started = first(step.events, "started", 1);
  if (step.blocker) {
    const b = step.blocker;
    if (b.started_ms) {
      const end = b.ended_ms || nowMs;
      items.push({ lane: "held", kind: "blocker", start: b.started_ms, end,
        text: `${b.id} ran ${duration(end - b.started_ms)} (${b.status})` });
    }
    const fired = started ? started.fired_ms : step.pending ? nowMs : null;
    if (fired !== null && fired > scheduled.due_ms) {
      items.push({ lane: "held", kind: "hold", start: scheduled.due_ms, end: fired,
        text: `held ${duration(fired - scheduled.due_ms)} while ${b.id} ran` });
    }
  }
  for (const start of step.events.filter((e) => e.type === "started")) {
    const attempt = start.attempt || 1;
    const end = step.events.find((e) => ["succeeded", "failed", "retrying"].includes(e.type) &&
      (e.attempt || 1) === attempt && e.ts_ms >= start.ts_ms);
    const kind = end ? (end.type === "retrying" ? "failed" : end.type) : "running";
    const endMs = end ? end.ts_ms : nowMs;
    items.push({ lane: "run", kind: `run ${kind}`, start: start.ts_ms, end: endMs,
      text: `attempt ${attempt} ${kind}, ran ${duration(endMs - start.ts_ms)}` });
    if (end && end.type === "retrying") {
      items.push({ lane: "run", kind: "backoff", start: end.ts_ms, end: end.retry_at_ms,
        text: `backoff ${duration(end.retry_at_ms - end.ts_ms)} before attempt ${attempt + 1}` });
    }
  }
  return items;
}

function lanes(items) {
  const names = ["calls", "held", "run"].filter((lane) => items.some((i) => i.lane === lane));
  return Object.fromEntries(names.map((lane, i) => [lane, PAD.top + i * LANE]));
}

const LABELS = { calls: "calls", held: "held by", run: "run" };
// What each kind of mark means, for the legend under the timeline.
const MEANINGS = [["call", "a call"], ["quiet", "quiet period, until a newer call replaced it"],
  ["quiet last", "quiet period, until due"], ["due", "due"],
  ["hold", "held: due, but an earlier run of its key was still going"],
  ["blocker", "that earlier run"], ["run succeeded", "run, succeeded"],
  ["run failed", "run, failed"], ["run running", "running"], ["backoff", "backoff before a retry"]];

function draw(item, x, laneTop, height) {
  const y = laneTop + (LANE - BAR) / 2;
  let node;
  if (item.kind === "call") {
    node = svg("line", { x1: x(item.start), x2: x(item.start), y1: y - 3, y2: y + BAR + 3 });
  } else if (item.kind === "due") {
    node = svg("line", { x1: x(item.start), x2: x(item.start), y1: PAD.top,
      y2: height - PAD.bottom });
  } else {
    node = svg("rect", { x: x(item.start), y, height: BAR,
      width: Math.max(2, x(item.end) - x(item.start)) });
  }
  node.setAttribute("class", `mark ${item.kind}`);
  node.dataset.kind = item.kind.split(" ")[0];
  node.dataset.start = String(item.start);
  node.dataset.end = String(item.end);
  if (item.id) node.dataset.id = item.id;
  return tip(node, item.text);
}

function legend(items) {
  const list = el("ul", null, "legend timeline-legend");
  for (const [kind, meaning] of MEANINGS) {
    if (!items.some((i) => i.kind === kind)) continue;
    const item = el("li", null, `key ${kind}`);
    item.append(el("span", meaning));
    list.append(item);
  }
  return list;
}

// The story's timeline, `width` pixels wide, with relative time labels from its first call,
// and its legend; null when the console has no events of the story.
export function timeline(story, nowMs, width) {
  const items = spans(story, nowMs);
  if (!items.length) return null;
  const t0 = Math.min(...items.map((i) => i.start));
  const t1 = Math.max(...items.map((i) => i.end), t0 + 1);
  const pad = (t1 - t0) * 0.02;
  const rows = lanes(items);
  const height = PAD.top + Object.keys(rows).length * LANE + PAD.bottom;
  const x = scale(t0 - pad, t1 + pad, PAD.left, width - PAD.right);
  const chart = svg("svg", { width, height, class: "timeline", id: "timeline" });
  Object.assign(chart.dataset, { t0: x.t0, t1: x.t1, x0: x.x0, x1: x.x1 });
  const grid = svg("g");
  timeAxis(grid, x, PAD.top, height - PAD.bottom, (t) => `+${duration(t - t0)}`, 6, t0);
  chart.append(grid);
  for (const [lane, top] of Object.entries(rows)) {
    chart.append(svg("text", { x: 4, y: top + LANE / 2 + 4, class: "lane" }, LABELS[lane]));
  }
  for (const item of items) {
    chart.append(draw(item, x, rows[item.lane], height));
  }
  return [chart, legend(items)];
}
