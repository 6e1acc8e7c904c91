// The server view's figures, read from the server's own Prometheus /metrics: counters become
// rates between two scrapes, and latency quantiles come from the histogram buckets' growth
// (as Prometheus' histogram_quantile does). The page's own traffic is left out.

// Not "/": TEI's POST / embeds there (the page's own GET / is one request a load).
const OWN_ROUTES = new Set(["/metrics", "/ui/{name}", "/health", "/ready", "/v1/models",
  "/v1/batches", "unmatched"]);

// [{name, labels, value}] from the text exposition format.
export function parse(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    const body = match[3] || "";
    const pair = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let found;
    while ((found = pair.exec(body)) !== null) labels[found[1]] = found[2].replace(/\\(.)/g, "$1");
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

// One scrape, summed over what the charts show.
export function scrape(text, t) {
  const totals = { t, requests: 0, rejected: 0, inputs: 0, queue: 0, buckets: new Map() };
  for (const s of parse(text)) {
    const served = !OWN_ROUTES.has(s.labels.route);
    if (s.name === "embedserve_requests_total" && served) {
      totals.requests += s.value;
      if (s.labels.status === "429") totals.rejected += s.value;
    } else if (s.name === "embedserve_inputs_total") {
      totals.inputs += s.value;
    } else if (s.name === "embedserve_queue_depth" && Number.isFinite(s.value)) {
      totals.queue += s.value;
    } else if (s.name === "embedserve_request_seconds_bucket" && served) {
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      totals.buckets.set(le, (totals.buckets.get(le) || 0) + s.value);
    }
  }
  return totals;
}

// The q-quantile (0..1) of the requests observed between two scrapes, in seconds; NaN if none.
export function quantile(q, before, after) {
  const bounds = [...after.buckets.keys()].sort((a, b) => a - b);
  const grown = bounds.map((le) => (after.buckets.get(le) || 0) - (before.buckets.get(le) || 0));
  const total = grown[grown.length - 1];
  if (!total) return NaN;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i += 1) {
    if (grown[i] >= rank) {
      if (bounds[i] === Infinity) return lower;  // past the last bound: its lower edge
      const inside = grown[i] - below;
      return lower + (bounds[i] - lower) * (inside ? (rank - below) / inside : 1);
    }
    lower = bounds[i];
    below = grown[i];
  }
  return NaN;
}

// The charts' points at the latest scrape, from the scrapes kept (oldest first).
export function figures(scrapes, window) {
  const after = scrapes[scrapes.length - 1];
  const before = scrapes[Math.max(0, scrapes.length - 1 - window)];
  const seconds = (after.t - before.t) / 1000;
  if (scrapes.length < 2 || seconds <= 0) return null;
  return {
    requestRate: (after.requests - before.requests) / seconds,
    inputRate: (after.inputs - before.inputs) / seconds,
    p50: quantile(0.5, before, after) * 1000,
    p99: quantile(0.99, before, after) * 1000,
    queue: after.queue,
    rejected: after.rejected - before.rejected,
    requests: after.requests,
  };
}
