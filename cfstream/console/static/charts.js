// Line charts of a pipeline's or a task's last 15 minutes or hour, drawn as SVG.
import { el } from "./dom.js";
import { count, duration, rate } from "./format.js";
import { scale, svg, timeAxis, valueStep } from "./svg.js";

const HEIGHT = 150;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };
// What each chart draws from a series: [field, label, css class].
const CHARTS = [
  { id: "throughput", title: "Throughput", unit: "/s", format: rate, rates: true,
    lines: [["calls", "calls/s", "s1"], ["deferrals", "deferrals/s", "s2"],
      ["fires", "fires/s", "s3"], ["failed", "failed/s", "s4"]] },
  { id: "pending", title: "Pending calls", format: count,
    lines: [["pending", "pending", "s1"]] },
  { id: "lateness", title: "Fire lateness", format: duration,
    lines: [["p50", "p50", "s3"], ["p99", "p99", "s4"]] },
];
let hovered = null;  // the time under the pointer, kept across the redraws of each second

function hhmm(t) {
  const d = new Date(t);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

// "M x y L x y ...", a gap where a value is missing.
function path(values, x, y, start, step) {
  let d = "";
  let pen = "M";
  values.forEach((value, i) => {
    if (value === null || value === undefined) { pen = "M"; return; }
    d += `${pen}${x(start + (i + 1) * step).toFixed(1)} ${y(value).toFixed(1)}`;
    pen = "L";
  });
  return d;
}

function latest(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

function legend(spec, data, index) {
  const list = el("ul", null, "legend");
  for (const [field, label, cls] of spec.lines) {
    const values = data[field];
    const value = index === null ? latest(values) : values[index];
    const item = el("li", null, cls);
    item.append(el("span", label), " ", el("b", value === null ? "–" : spec.format(value)));
    item.dataset.series = field;
    list.append(item);
  }
  return list;
}

function plot(spec, data, width) {
  const start = data.start_ms;
  const step = data.step_ms;
  const x = scale(start, start + step * data.calls.length, PAD.left, width - PAD.right);
  const all = spec.lines.flatMap(([field]) => data[field]).filter((v) => v !== null);
  const top = valueStep(Math.max(...all, 0) * 1.1, 3) * 3 || 1;
  const y = scale(0, top, HEIGHT - PAD.bottom, PAD.top);
  const chart = svg("svg", { width, height: HEIGHT, class: "plot" });
  const grid = svg("g");
  timeAxis(grid, x, PAD.top, HEIGHT - PAD.bottom, hhmm, Math.max(2, width / 90));
  for (let v = 0; v <= top; v += top / 3) {
    grid.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v),
      class: "grid" }));
    grid.append(svg("text", { x: PAD.left - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" },
      spec.rates && Number.isInteger(v) ? String(v) : spec.format(v)));
  }
  chart.append(grid);
  for (const [field, , cls] of spec.lines) {
    const line = svg("path", { d: path(data[field], x, y, start, step), class: `line ${cls}` });
    line.dataset.series = field;
    if (spec.rates) {
      line.dataset.count = String(Math.round(data[field].reduce((a, b) => a + b, 0) * step / 1000));
    }
    chart.append(line);
  }
  return { chart, x };
}

function figure(spec, data, width, onHover) {
  const box = el("figure", null, "chart");
  box.dataset.chart = spec.id;
  box.dataset.stepMs = String(data.step_ms);
  box.append(el("figcaption", spec.title));
  const { chart, x } = plot(spec, data, width);
  const index = hovered === null ? null :
    Math.min(data.calls.length - 1, Math.max(0, Math.floor((hovered - data.start_ms) / data.step_ms)));
  if (index !== null) {
    const at = x(data.start_ms + (index + 1) * data.step_ms);
    chart.append(svg("line", { x1: at, x2: at, y1: PAD.top, y2: HEIGHT - PAD.bottom,
      class: "cursor" }));
  }
  chart.addEventListener("mousemove", (event) => {
    const bounds = chart.getBoundingClientRect();
    const px = event.clientX - bounds.left;
    hovered = px < PAD.left ? null : x.t0 + ((px - x.x0) / (x.x1 - x.x0)) * (x.t1 - x.t0);
    onHover();
  });
  chart.addEventListener("mouseleave", () => { hovered = null; onHover(); });
  box.append(chart, legend(spec, data, index));
  return box;
}

// The three charts of `data` (a series from the snapshot) into `box`; `redraw` draws again.
export function drawCharts(box, data, redraw) {
  if (!data) {
    box.replaceChildren(el("p", "No chart for this task yet: it shows once the console reads " +
      "an event of the task.", "note"));
    return;
  }
  const width = Math.max(240, Math.floor((box.clientWidth || 960) / CHARTS.length) - 16);
  box.replaceChildren(...CHARTS.map((spec) => figure(spec, data, width, redraw)));
}
