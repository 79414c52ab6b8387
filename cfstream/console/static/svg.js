// SVG drawn by the console's own code: elements, a time axis, and nice tick steps.
import { clock } from "./format.js";

const NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// A hover text for an SVG element (its <title>, set as text).
export function tip(node, text) {
  node.append(svg("title", {}, text));
  return node;
}

const TIME_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000,
  30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000,
  21_600_000, 43_200_000, 86_400_000];

// The smallest step from the list giving at most `most` ticks over `range` ms.
export function timeStep(range, most) {
  return TIME_STEPS.find((step) => range / step <= most) || range;
}

// A round step for a value axis: 1, 2 or 5 times a power of ten.
export function valueStep(max, most) {
  if (!(max > 0)) return 1;
  const raw = max / most;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

// A linear map of [t0, t1] onto [x0, x1].
export function scale(t0, t1, x0, x1) {
  const span = t1 - t0 || 1;
  const at = (t) => x0 + ((t - t0) / span) * (x1 - x0);
  return Object.assign(at, { t0, t1, x0, x1 });
}

// Vertical grid lines and labels along the bottom, every round step from `origin`;
// `label(t)` writes a tick.
export function timeAxis(group, x, top, bottom, label = clock, most = 6, origin = 0) {
  const step = timeStep(x.t1 - x.t0, most);
  for (let t = origin + Math.ceil((x.t0 - origin) / step) * step; t <= x.t1; t += step) {
    group.append(svg("line", { x1: x(t), x2: x(t), y1: top, y2: bottom, class: "grid" }));
    group.append(svg("text", { x: x(t), y: bottom + 13, class: "tick", "text-anchor": "middle" },
      label(t)));
  }
}
