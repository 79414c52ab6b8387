// The console's page. Everything shown goes through textContent: arguments are user data.
"use strict";

const token = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const view = { task: "", key: "", story: "" };
let confirming = null;  // the execution id whose cancel waits for a confirmation
let source = null;
let last = null;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    tr.append(cell instanceof Node ? wrap(cell) : el("td", cell));
  }
  return tr;
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.append(node);
  return td;
}

function num(value, digits) {
  return el("td", value === null || value === undefined ? "–" : value.toFixed(digits), "num");
}

function ms(value) {
  return el("td", value === null || value === undefined ? "–" : `${value} ms`, "num");
}

function seconds(dueMs, nowMs) {
  if (dueMs === null || dueMs === undefined) return "–";
  const left = (dueMs - nowMs) / 1000;
  return left >= 0 ? `${left.toFixed(1)} s` : `due ${(-left).toFixed(1)} s ago`;
}

function clock(tsMs) {
  const d = new Date(tsMs);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(tsMs % 1000).padStart(3, "0");
}

function idButton(id) {
  const button = el("button", id, "link");
  button.type = "button";
  button.dataset.story = id;
  button.addEventListener("click", () => showStory(id));
  return button;
}

function args(call) {
  const parts = [JSON.stringify(call.args)];
  if (call.kwargs && Object.keys(call.kwargs).length) parts.push(JSON.stringify(call.kwargs));
  return el("td", parts.join(" "), "mono args");
}

function detail(e) {
  switch (e.type) {
    case "scheduled": return `due in ${((e.due_ms - e.ts_ms) / 1000).toFixed(3)} s`;
    case "deferred": return `→ ${e.successor} (${e.reason})`;
    case "started": return `${e.ts_ms - e.due_ms} ms after due, on ${e.worker}`;
    case "succeeded": return `result ${JSON.stringify(e.result)}`;
    case "failed": return `${(e.error || {}).type}: ${(e.error || {}).message}`;
    case "retrying": return `attempt ${e.attempt} failed, ${(e.error || {}).type}: ` +
      `${(e.error || {}).message}; attempt ${e.next_attempt} in ` +
      `${((e.retry_at_ms - e.ts_ms) / 1000).toFixed(3)} s`;
    default: return e.reason || "";
  }
}

function replace(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderTasks(s) {
  replace($("tasks").tBodies[0], s.tasks.map((t) => {
    const tr = row([el("td", t.task, "mono"), num(t.pending, 0),
      el("td", seconds(t.next_due_ms, s.now_ms), "num"), num(t.calls_per_s, 2),
      num(t.deferrals_per_s, 2),
      el("td", t.collapse === null ? "–" : `${Math.round(t.collapse * 100)}%`, "num"),
      num(t.fires_per_s, 2), ms(t.lateness_p50_ms), ms(t.lateness_p99_ms),
      num(t.succeeded, 0), num(t.failed, 0), num(t.cancelled, 0)]);
    tr.dataset.task = t.task;
    return tr;
  }));
  $("dead-letters").textContent = String(s.dead_letters);
}

function cancelCell(id) {
  const td = document.createElement("td");
  if (confirming !== id) {
    const button = el("button", "cancel…");
    button.type = "button";
    button.className = "cancel";
    button.addEventListener("click", () => { confirming = id; render(); });
    td.append(button);
    return td;
  }
  td.append(el("span", "cancel this call? "));
  const yes = el("button", "yes, cancel it", "danger confirm");
  yes.type = "button";
  yes.addEventListener("click", () => cancelCall(id));
  const no = el("button", "keep", "keep");
  no.type = "button";
  no.addEventListener("click", () => { confirming = null; render(); });
  td.append(yes, " ", no);
  return td;
}

function renderPending(s) {
  const p = s.pending;
  $("pending-count").textContent = `${p.matching} of ${p.total}` +
    (p.calls.length < p.matching ? `, the first ${p.calls.length} shown` : "");
  replace($("pending").tBodies[0], p.calls.map((c) => {
    const task = c.attempt > 1 ? `${c.task} (attempt ${c.attempt})` : c.task;
    const key = el("td", c.defer_key, "mono");
    if (c.modes) key.append(" ", el("span", c.modes, "modes"));
    const tr = row([idButton(c.id), el("td", task, "mono"), key,
      el("td", seconds(c.due_ms, s.now_ms), "num due"), args(c), cancelCell(c.id)]);
    tr.dataset.id = c.id;
    return tr;
  }));
}

function renderStory(s) {
  const box = $("story");
  const story = s.story;
  if (!story) { box.replaceChildren(); return; }
  const parts = [];
  const status = el("p", `status: ${story.status}`, "outcome");
  status.id = "story-status";
  parts.push(status);
  if (!story.known) {
    parts.push(el("p", "No events for this id in the console's memory (the last hour, the " +
      "latest 20000 executions): `cfstream events --id ID` reads the whole topic.", "note"));
  }
  story.steps.forEach((step, i) => {
    const div = el("div", null, "step");
    div.dataset.id = step.id;
    div.append(el("div", `${i === 0 ? "" : "→ "}${step.id}`, "mono"));
    const list = document.createElement("table");
    for (const e of step.events) {
      list.append(row([el("td", clock(e.ts_ms), "mono"), el("td", e.type, `event-${e.type}`),
        el("td", e.task || "", "mono"), el("td", e.defer_key, "mono"), el("td", detail(e))]));
    }
    if (step.pending) {
      list.append(row([el("td", ""), el("td", "pending"),
        el("td", seconds(step.pending.due_ms, s.now_ms)), args(step.pending)]));
    }
    div.append(list);
    parts.push(div);
  });
  const outcome = story.outcome;
  if (outcome && outcome.type === "succeeded") {
    parts.push(el("p", "result:"), el("pre", JSON.stringify(outcome.result, null, 2), "result"));
  } else if (outcome && outcome.type === "failed") {
    const error = outcome.error || {};
    parts.push(el("p", `${error.type}: ${error.message}`, "error"),
      el("pre", error.traceback || "(no traceback: the task did not run)", "traceback"));
  } else if (outcome) {
    parts.push(el("p", `reason: ${outcome.reason || ""}`, "reason"));
  }
  box.replaceChildren(...parts);
}

function renderRecent(s) {
  replace($("recent").tBodies[0], s.recent.map((e) => row([el("td", clock(e.ts_ms), "mono"),
    el("td", e.type, `event-${e.type}`), e.id ? idButton(e.id) : el("td", ""),
    el("td", e.task || "", "mono"), el("td", e.defer_key, "mono"), el("td", detail(e))])));
}

function renderErrors(s) {
  replace($("errors"), Object.values(s.errors).map((message) => el("li", message)));
}

function render() {
  if (!last) return;
  renderTasks(last);
  renderPending(last);
  renderStory(last);
  renderRecent(last);
  renderErrors(last);
}

function connect() {
  if (source) source.close();
  const query = new URLSearchParams(view);
  source = new EventSource(`/api/stream?${query}`);
  source.onmessage = (message) => {
    last = JSON.parse(message.data);
    $("status").textContent = `live, updated ${clock(last.now_ms)}`;
    $("status").className = "status live";
    render();
  };
  source.onerror = () => {
    $("status").textContent = "console unreachable, retrying…";
    $("status").className = "status down";
  };
}

function showStory(id) {
  $("story-id").value = id;
  view.story = id;
  connect();
}

async function cancelCall(id) {
  confirming = null;
  const response = await fetch("/api/cancel", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
    body: JSON.stringify({ id }),
  });
  const body = await response.json().catch(() => ({}));
  $("cancel-message").textContent = response.ok
    ? `cancel sent for ${id}` : `could not cancel: ${body.error || response.status}`;
  render();
}

let typing = null;
for (const [input, field] of [["search-task", "task"], ["search-key", "key"]]) {
  $(input).addEventListener("input", () => {
    view[field] = $(input).value;
    clearTimeout(typing);
    typing = setTimeout(connect, 200);
  });
}
$("search").addEventListener("submit", (event) => event.preventDefault());
$("story-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showStory($("story-id").value.trim());
});
connect();
