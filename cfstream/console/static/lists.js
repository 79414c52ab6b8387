// The console's lists (pending calls, executions, events, dead letters), their pages, and the
// cancel of a pending call.
import { button, el, fill, idRef, row, taskLink, timeCell, toast } from "./dom.js";
import { args, count, countdown, detail, duration } from "./format.js";

const token = document.querySelector('meta[name="csrf-token"]').content;
let confirming = null;  // the execution id whose cancel waits for a confirmation

async function cancelCall(id, redraw) {
  confirming = null;
  redraw();
  const response = await fetch("/api/cancel", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
    body: JSON.stringify({ id }),
  });
  const body = await response.json().catch(() => ({}));
  if (response.ok) toast(`cancel sent for ${id}`, "info");
  else toast(`could not cancel: ${body.error || response.status}`, "error");
}

function cancelCell(id, redraw) {
  const cell = el("td", null, "actions");
  if (confirming !== id) {
    cell.append(button("cancel…", "cancel", () => { confirming = id; redraw(); }));
    return cell;
  }
  cell.append(el("span", "cancel this call? "),
    button("yes, cancel it", "danger confirm", () => cancelCall(id, redraw)), " ",
    button("keep", "keep", () => { confirming = null; redraw(); }));
  return cell;
}

export function pendingRows(tbody, page, nowMs, redraw) {
  fill(tbody, page.rows.map((c) => {
    const task = el("td", null, "mono");
    task.append(taskLink(c.task));
    if (c.attempt > 1) task.append(` (attempt ${c.attempt})`);
    const key = el("td", c.defer_key, "mono");
    if (c.modes) key.append(" ", el("span", c.modes, "modes"));
    const due = el("td", countdown(c.due_ms, nowMs), "num due");
    due.title = new Date(c.due_ms).toISOString();
    const tr = row([idRef(c.id), task, key, due, el("td", args(c), "mono args"),
      cancelCell(c.id, redraw)]);
    tr.dataset.id = c.id;
    return tr;
  }), "No pending calls match.");
}

function took(x, nowMs) {
  if (!x.started_ms) return "–";
  return x.ended_ms ? duration(x.ended_ms - x.started_ms) : `${duration(nowMs - x.started_ms)}…`;
}

export function executionRows(tbody, page, nowMs) {
  fill(tbody, page.rows.map((x) => {
    const tr = row([idRef(x.id), x.task ? taskLink(x.task) : "", el("td", x.defer_key, "mono"),
      el("td", x.status, `pill status-${x.status}`),
      el("td", x.attempt > 1 ? String(x.attempt) : "", "num"), timeCell(x.first_ms),
      el("td", took(x, nowMs), "num")]);
    tr.dataset.id = x.id;
    tr.dataset.status = x.status;
    return tr;
  }), "No executions match.");
}

export function eventRows(tbody, page) {
  fill(tbody, page.rows.map((e) => {
    const tr = row([timeCell(e.ts_ms), el("td", e.type, `event event-${e.type}`),
      e.id ? idRef(e.id) : "", e.task ? taskLink(e.task) : "", el("td", e.defer_key, "mono"),
      el("td", detail(e))]);
    tr.dataset.ts = String(e.ts_ms);
    tr.dataset.type = e.type;
    return tr;
  }), "No events match.");
}

export function deadLetterRows(tbody, page) {
  fill(tbody, page.rows.map((e) => row([timeCell(e.ts_ms), el("td", e.reason, "error"),
    el("td", `${e.topic}:${e.partition}:${e.offset}`, "mono"), e.id ? idRef(e.id) : "–"])),
  "No dead letters: every record read followed the wire format.");
}

// "51–100 of 5,000" and the buttons to the first, previous and next pages. `cursors` is the
// stack of the pages before this one; `go(cursors)` shows another page.
export function pager(box, page, cursors, go, newestFirst = true) {
  const from = page.total ? page.offset + 1 : 0;
  const to = page.offset + page.rows.length;
  const label = el("span", `${count(from)}–${count(to)} of ${count(page.total)}`, "range");
  const back = cursors.length > 0;
  const buttons = [
    [newestFirst ? "« newest" : "« first", "first", back, () => go([])],
    [newestFirst ? "‹ newer" : "‹ previous", "previous", back, () => go(cursors.slice(0, -1))],
    [newestFirst ? "older ›" : "next ›", "next", !!page.next, () => go([...cursors, page.next])],
  ].map(([text, cls, enabled, onClick]) => {
    const node = button(text, `page ${cls}`, onClick);
    node.disabled = !enabled;
    return node;
  });
  box.replaceChildren(buttons[0], buttons[1], label, buttons[2]);
}
