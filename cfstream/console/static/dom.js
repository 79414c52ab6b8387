// Building the page: every text goes in through textContent, never as HTML (arguments,
// results, ids and keys are user data).
import { fullTime, clock, shortId } from "./format.js";
import { svg } from "./svg.js";

// How long a message stays on the page.
export const TOAST_MS = 6000;

export const $ = (id) => document.getElementById(id);

export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

export function button(text, className, onClick, title) {
  const node = el("button", text, className);
  node.type = "button";
  if (title) node.title = title;
  node.addEventListener("click", onClick);
  return node;
}

export function td(content, className) {
  if (content instanceof Node) {
    if (content.tagName === "TD") return content;
    const cell = el("td", null, className);
    cell.append(content);
    return cell;
  }
  return el("td", content, className);
}

export function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(td(cell));
  return tr;
}

export function timeCell(tsMs) {
  const cell = el("td", tsMs ? clock(tsMs) : "–", "mono time");
  if (tsMs) cell.title = fullTime(tsMs);
  return cell;
}

// An empty table says so instead of showing nothing.
export function fill(tbody, rows, emptyText) {
  if (rows.length || !emptyText) {
    tbody.replaceChildren(...rows);
    return;
  }
  const cell = el("td", emptyText, "empty");
  cell.colSpan = tbody.parentElement.tHead ? tbody.parentElement.tHead.rows[0].cells.length : 1;
  const tr = document.createElement("tr");
  tr.append(cell);
  tbody.replaceChildren(tr);
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on another host: the old way still works there.
  const area = el("textarea", null, "offscreen");
  area.value = text;
  document.body.append(area);
  area.select();
  const done = document.execCommand("copy");
  area.remove();
  if (!done) throw new Error("the browser refused to copy");
}

// Two overlapping sheets: drawn, so that it shows whatever fonts the machine has.
function copyIcon() {
  const icon = svg("svg", { width: 12, height: 12, viewBox: "0 0 12 12", class: "icon" });
  icon.append(svg("rect", { x: 0.5, y: 2.5, width: 7, height: 9, rx: 1 }),
    svg("path", { d: "M3 2.5V1.5a1 1 0 0 1 1-1h6a1 1 0 0 1 1 1v7a1 1 0 0 1-1 1H8" }));
  return icon;
}

// Ids copied in the last COPIED_MS: their buttons say "copied" through the page's re-renders
// (a row is drawn anew each second).
const COPIED_MS = 1500;
const copiedAt = new Map();

// A short id linking to its story, the full id on hover, and a button copying it.
export function idRef(id) {
  const wrap = el("span", null, "id");
  const link = el("a", shortId(id), "mono");
  link.href = `#/executions/${encodeURIComponent(id)}`;
  link.title = id;
  link.dataset.story = id;
  const copy = button(null, "copy", async () => {
    try {
      await copyText(id);
      copiedAt.set(id, Date.now());
      copy.textContent = "copied";
      setTimeout(() => {
        copiedAt.delete(id);
        copy.replaceChildren(copyIcon());
      }, COPIED_MS);
    } catch (exc) {
      toast(`could not copy: ${exc.message}`, "error");
    }
  }, "copy the full id");
  if (Date.now() - (copiedAt.get(id) ?? 0) < COPIED_MS) copy.textContent = "copied";
  else copy.append(copyIcon());
  copy.dataset.copy = id;
  wrap.append(link, copy);
  return wrap;
}

// A message that goes away by itself (or when closed).
export function toast(text, kind = "info") {
  const box = el("div", null, `toast ${kind}`);
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  const close = () => box.remove();
  box.append(el("span", text), button("×", "close", close, "dismiss"));
  $("toasts").append(box);
  setTimeout(close, TOAST_MS);
  return box;
}

export function taskLink(task) {
  const link = el("a", task, "mono");
  link.href = `#/tasks/${encodeURIComponent(task)}`;
  return link;
}
