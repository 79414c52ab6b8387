// An execution's story: a timeline of its deferral chain and run, its events below.
import { $, el, idRef, row, taskLink, timeCell } from "./dom.js";
import { args, countdown, detail } from "./format.js";
import { timeline } from "./timeline.js";

function stepTable(step, nowMs) {
  const table = el("table", null, "events");
  const body = document.createElement("tbody");
  for (const e of step.events) {
    body.append(row([timeCell(e.ts_ms), el("td", e.type, `event event-${e.type}`),
      e.task ? taskLink(e.task) : "", el("td", e.defer_key, "mono"), el("td", detail(e))]));
  }
  if (step.pending) {
    body.append(row([el("td", ""), el("td", "pending", "event"),
      el("td", countdown(step.pending.due_ms, nowMs)), el("td", args(step.pending), "mono args"),
      el("td", step.pending.modes)]));
  }
  table.append(body);
  return table;
}

function outcome(story) {
  const found = story.outcome;
  if (!found) return [];
  if (found.type === "succeeded") {
    return [el("h3", "Result"), el("pre", JSON.stringify(found.result, null, 2), "result")];
  }
  if (found.type === "failed") {
    const error = found.error || {};
    return [el("h3", "Error"), el("p", `${error.type}: ${error.message}`, "error"),
      el("pre", error.traceback || "(no traceback: the task did not run)", "traceback")];
  }
  return [el("p", `reason: ${found.reason || ""}`, "reason")];
}

export function renderStory(s) {
  const box = $("story");
  const story = s.story;
  $("story-title").textContent = story ? `Execution ${story.id}` : "Execution";
  if (!story) { box.replaceChildren(el("p", "Enter an execution id above.", "note")); return; }
  const parts = [];
  const status = el("p", `status: ${story.status}`, `outcome status-${story.status}`);
  status.id = "story-status";
  parts.push(status);
  if (!story.known) {
    parts.push(el("p", "No events for this id in the console's memory (the last hour, the " +
      "latest 20000 executions): `cfstream events --id ID` reads the whole topic.", "note"));
  }
  const width = Math.max(480, (box.clientWidth || 1000) - 4);
  const drawn = timeline(story, s.now_ms, width);
  if (drawn) parts.push(...drawn);
  story.steps.forEach((step, i) => {
    const div = el("div", null, "step");
    div.dataset.id = step.id;
    const head = el("div", i === 0 ? "" : "→ ", "step-head");
    head.append(idRef(step.id));
    if (i === 0 && story.steps.length > 1) {
      head.append(el("span", ` and ${story.steps.length - 1} later call(s) of its key`, "note"));
    }
    div.append(head, stepTable(step, s.now_ms));
    parts.push(div);
  });
  parts.push(...outcome(story));
  box.replaceChildren(...parts);
}
