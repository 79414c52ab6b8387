// How the console writes times, durations, ids and events for people.

const UNITS = [["d", 86_400_000], ["h", 3_600_000], ["min", 60_000], ["s", 1000]];

// "850 ms", "4.2 s", "38 s", "9 min 58 s", "2 h 5 min", "3 d 4 h": the two largest units.
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  const sign = ms < 0 ? "-" : "";
  let left = Math.abs(Math.round(ms));
  if (left < 1000) return `${sign}${left} ms`;
  if (left < 10_000) return `${sign}${(left / 1000).toFixed(1)} s`;
  const parts = [];
  for (const [unit, size] of UNITS) {
    if (left >= size || parts.length) {
      const n = Math.floor(left / size);
      left -= n * size;
      if (n || parts.length) parts.push(`${n} ${unit}`);
    }
    if (parts.length === 2) break;
  }
  if (parts.length === 2 && parts[1].startsWith("0 ")) parts.pop();
  return sign + parts.join(" ");
}

// A due time seen from now: "in 9 min 58 s", "3.1 s overdue".
export function countdown(dueMs, nowMs) {
  if (dueMs === null || dueMs === undefined) return "–";
  const left = dueMs - nowMs;
  return left >= 0 ? `in ${duration(left)}` : `${duration(-left)} overdue`;
}

export function clock(tsMs) {
  const d = new Date(tsMs);
  return d.toLocaleTimeString([], { hour12: false }) + "." +
    String(((tsMs % 1000) + 1000) % 1000).padStart(3, "0");
}

export function fullTime(tsMs) {
  return new Date(tsMs).toISOString();
}

// UUIDv7 ids share their leading (time) digits: the random tail tells them apart.
export function shortId(id) {
  const text = String(id);
  return text.length <= 12 ? text : `…${text.slice(-8)}`;
}

export function rate(value) {
  if (value === null || value === undefined) return "–";
  if (value === 0) return "0";
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

export function count(value) {
  return value === null || value === undefined ? "–" : value.toLocaleString("en-US");
}

function error(e) {
  const failure = e.error || {};
  return `${failure.type}: ${failure.message}`;
}

// One line saying what an event adds to its execution's story.
export function detail(e) {
  switch (e.type) {
    case "scheduled":
      return (e.due_ms > e.ts_ms ? `due in ${duration(e.due_ms - e.ts_ms)}` : "due at once") +
        (e.after ? `, after ${e.after} ends` : "");
    case "deferred": return `→ ${e.successor} (${e.reason})`;
    case "started": return `${duration(e.ts_ms - e.due_ms)} after due, on ${e.worker}`;
    case "succeeded": return `result ${JSON.stringify(e.result)}`;
    case "failed": return error(e);
    case "retrying": return `attempt ${e.attempt} failed, ${error(e)}; attempt ` +
      `${e.next_attempt} in ${duration(e.retry_at_ms - e.ts_ms)}`;
    case "invalid": return `${e.reason} (${e.topic}:${e.partition}:${e.offset})`;
    default: return e.reason || "";
  }
}

export function args(call) {
  const parts = [JSON.stringify(call.args)];
  if (call.kwargs && Object.keys(call.kwargs).length) parts.push(JSON.stringify(call.kwargs));
  return parts.join(" ");
}
