// The server view: served models, live traffic from /metrics, running batches. It polls only
// while shown, every POLL_MS, and keeps the last KEEP_MS of figures.

import { get } from "./api.js";
import { el, sparkline } from "./charts.js";
import { figures, scrape } from "./metrics.js";

const POLL_MS = 2000;
const KEEP_MS = 5 * 60 * 1000;
const WINDOW = 5; // scrapes that rates and quantiles are taken over (10 s)
const RUNNING = new Set(["validating", "in_progress", "finalizing", "cancelling"]);

const scrapes = [];
const points = [];
let timer = null;
let polling = 0; // the poll loop's number: a tick of a loop since stopped schedules nothing

export function startServerView(showError) {
  if (timer !== null) return;
  const loop = ++polling;
  const tick = async () => {
    if (!document.hidden) {  // a hidden browser tab costs the server nothing
      try {
        await Promise.all([models(), traffic(), batches()]);
      } catch (error) {
        showError(error);
      }
    }
    if (loop === polling) timer = setTimeout(tick, POLL_MS);
  };
  timer = setTimeout(tick, 0);
}

export function stopServerView() {
  polling += 1;
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

async function models() {
  const [{ data: list }, ready] = await Promise.all([get("/v1/models"), readiness()]);
  const body = document.querySelector("#models tbody");
  body.replaceChildren(...list.data.map((card) => {
    const row = el("tr", { "data-model": card.id });
    const state = ready[card.id] || (card.ready ? "ready" : "loading");
    const memory = card.memory_bytes == null ? "–" : `${Math.round(card.memory_bytes / 2 ** 20)} MiB`;
    const cells = [card.id, card.task, card.backend || "–", card.precision || "–",
      card.dimension ?? "–", memory, state];
    cells.forEach((value) => row.append(el("td", {}, String(value))));
    if (card.selection) row.title = card.selection;
    return row;
  }));
}

async function readiness() {
  try {
    return modelStates((await get("/ready")).data);
  } catch (error) {
    if (error.body && error.body.models) return modelStates(error.body);  // a 503: still its answer
    throw error;
  }
}

// Each model's state in /ready's answer (ready, unloaded, loading or failed); a loaded one
// is draining with the server.
function modelStates(answer) {
  const draining = answer.status === "draining";
  return Object.fromEntries(answer.models.map((m) => [m.id, m.ready && draining ? "draining" : m.state]));
}

async function traffic() {
  const { data } = await get("/metrics");
  const now = Date.now();
  const scraped = scrape(data, now);
  const last = scrapes[scrapes.length - 1];
  if (last && (scraped.requests < last.requests || scraped.inputs < last.inputs)) {
    scrapes.length = 0;  // the counters started again: a restart, or another replica on Ray
  }
  scrapes.push(scraped);
  while (scrapes.length > WINDOW + 1) scrapes.shift();
  const latest = figures(scrapes, WINDOW);
  if (latest) points.push({ t: now, ...latest });
  while (points.length && now - points[0].t > KEEP_MS) points.shift();
  const charts = document.getElementById("charts");
  charts.replaceChildren();
  const series = (key) => points.map((p) => ({ t: p.t, v: p[key] }));
  sparkline(charts, "requests/s", series("requestRate"), "/s", KEEP_MS);
  sparkline(charts, "inputs/s", series("inputRate"), "/s", KEEP_MS);
  sparkline(charts, "p50 latency", series("p50"), "ms", KEEP_MS);
  sparkline(charts, "p99 latency", series("p99"), "ms", KEEP_MS);
  sparkline(charts, "queue depth", series("queue"), "", KEEP_MS);
  sparkline(charts, "429s", series("rejected"), `in ${WINDOW * POLL_MS / 1000} s`, KEEP_MS);
  document.getElementById("window-note").textContent =
    `last ${Math.round(KEEP_MS / 60000)} minutes; rates over ${WINDOW * POLL_MS / 1000} s`;
}

async function batches() {
  const { data } = await get("/v1/batches?limit=20");
  const running = data.data.filter((b) => RUNNING.has(b.status));
  document.getElementById("batches-none").hidden = running.length > 0;
  document.getElementById("batches").replaceChildren(...running.map((batch) => {
    const counts = batch.request_counts || { total: 0, completed: 0, failed: 0 };
    const done = counts.completed + counts.failed;
    const item = el("li", { "data-batch": batch.id });
    const bar = el("progress", { max: String(counts.total || 1), value: String(done) });
    item.append(el("span", {}, `${batch.id} · ${batch.status} · ${done}/${counts.total}`), bar);
    return item;
  }));
}
