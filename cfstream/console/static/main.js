// The console's page: the route (#/section), the stream of snapshots for it, and drawing.
import { $, el } from "./dom.js";
import { clock, count } from "./format.js";
import { deadLetterRows, eventRows, executionRows, pager, pendingRows } from "./lists.js";
import { renderOverview, renderTask } from "./overview.js";
import { renderStory } from "./story.js";

const LISTS = ["pending", "executions", "events", "dead-letters"];
// The filter inputs of each list: [input id, query field].
const FILTERS = {
  pending: [["search-task", "task"], ["search-key", "key"]],
  executions: [["executions-task", "task"], ["executions-status", "status"]],
  events: [["events-task", "task"], ["events-type", "type"], ["events-text", "text"]],
  "dead-letters": [],
};
// Render times kept for the tests and for a look in the browser's console.
const RENDERS_KEPT = 600;

const route = { section: "overview", arg: "", params: new URLSearchParams() };
const cursors = Object.fromEntries(LISTS.map((name) => [name, []]));
let span = "900";
let source = null;
let last = null;
let reconnecting = null;
window.__console = { renders: [], messages: 0, bytes: 0 };

function parseRoute() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const [head, ...rest] = path.split("/");
  let arg = rest.join("/");
  try {
    arg = decodeURIComponent(arg);
  } catch {
    // a malformed %-escape in a hand-made address: taken as written
  }
  let section = head || "overview";
  if (section === "tasks" && arg) section = "task";
  else if (section === "executions" && arg) section = "story";
  if (![...LISTS, "overview", "task", "story"].includes(section)) section = "overview";
  Object.assign(route, { section, arg, params: new URLSearchParams(search || "") });
}

function query() {
  const q = new URLSearchParams({ section: route.section, span });
  if (route.section === "task") q.set("scope", route.arg);
  if (route.section === "story") q.set("story", route.arg);
  if (LISTS.includes(route.section)) {
    for (const [name, value] of route.params) q.set(name, value);
    const stack = cursors[route.section];
    if (stack.length) q.set("after", stack[stack.length - 1]);
  }
  return q;
}

function connect() {
  if (source) source.close();
  source = new EventSource(`/api/stream?${query()}`);
  source.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.section !== route.section) return;  // a stream being replaced
    last = data;
    window.__console.messages += 1;
    window.__console.bytes = message.data.length;
    $("status").textContent = `live, updated ${clock(last.now_ms)}`;
    $("status").className = "status live";
    timed(render);
  };
  source.onerror = () => {
    $("status").textContent = "console unreachable, retrying…";
    $("status").className = "status down";
  };
}

// Render and lay out (reading offsetHeight forces it), timed.
function timed(draw) {
  const started = performance.now();
  draw();
  void document.body.offsetHeight;
  const renders = window.__console.renders;
  renders.push(performance.now() - started);
  if (renders.length > RENDERS_KEPT) renders.shift();
}

function renderCommon(s) {
  $("nav-pending").textContent = count(s.summary.pending);
  $("nav-running").textContent = count(s.summary.running);
  $("dead-letters").textContent = String(s.summary.dead_letters);
  $("errors").replaceChildren(...Object.values(s.errors).map((message) => el("li", message)));
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    link.classList.toggle("current", link.dataset.section === route.section ||
      (route.section === "task" && link.dataset.section === "overview"));
  }
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== `section-${route.section}`;
  }
}

function renderList(s) {
  const name = route.section;
  const data = s[name === "dead-letters" ? "dead_letters" : name];
  const tbody = $(`${name}-table`).tBodies[0];
  if (name === "pending") {
    pendingRows(tbody, data, s.now_ms, render);
    $("pending-count").textContent = `${count(data.total)} of ${count(data.all)}`;
  } else if (name === "executions") executionRows(tbody, data, s.now_ms);
  else if (name === "events") eventRows(tbody, data);
  else deadLetterRows(tbody, data);
  pager($(`${name}-pager`), data, cursors[name], (stack) => {
    cursors[name] = stack;
    connect();
  }, name !== "pending");
  const scope = route.params.get("scope");
  const chip = $(`${name}-scope`);
  if (chip) {
    chip.hidden = !scope;
    chip.firstChild.textContent = scope ? `task ${scope} only ` : "";
  }
}

let chartFrame = null;
function redrawCharts() {
  if (chartFrame === null) {
    chartFrame = requestAnimationFrame(() => { chartFrame = null; render(); });
  }
}

function render() {
  if (!last) return;
  renderCommon(last);
  if (route.section === "overview") renderOverview(last, redrawCharts);
  else if (route.section === "task") renderTask(last, route.arg, render, redrawCharts);
  else if (route.section === "story") renderStory(last);
  else renderList(last);
}

function navigate() {
  parseRoute();
  for (const [input, field] of FILTERS[route.section] || []) {
    $(input).value = route.params.get(field) || "";
  }
  if (route.section === "story") $("story-id").value = route.arg;
  last = null;
  renderCommon({ summary: { pending: 0, running: 0, dead_letters: 0 }, errors: {} });
  connect();
}

// A filter typed: the hash says it (a link to share), the list starts again at its first page.
function filtered(section) {
  const params = new URLSearchParams(route.params);
  for (const [input, field] of FILTERS[section]) {
    const value = $(input).value.trim();
    if (value) params.set(field, value); else params.delete(field);
  }
  cursors[section] = [];
  history.replaceState(null, "", `#/${section}${params.size ? `?${params}` : ""}`);
  parseRoute();
  clearTimeout(reconnecting);
  reconnecting = setTimeout(connect, 200);
}

for (const [section, inputs] of Object.entries(FILTERS)) {
  for (const [input] of inputs) $(input).addEventListener("input", () => filtered(section));
}
for (const name of LISTS) {
  const chip = $(`${name}-scope`);
  if (chip) chip.querySelector("button").addEventListener("click", () => {
    route.params.delete("scope");
    filtered(name);
  });
}
for (const form of document.querySelectorAll("form")) {
  form.addEventListener("submit", (event) => event.preventDefault());
}
$("story-form").addEventListener("submit", () => {
  location.hash = `#/executions/${encodeURIComponent($("story-id").value.trim())}`;
});
for (const select of document.querySelectorAll("select.span")) {
  select.addEventListener("change", () => {
    span = select.value;
    for (const other of document.querySelectorAll("select.span")) other.value = span;
    connect();
  });
}
window.addEventListener("hashchange", navigate);
navigate();
