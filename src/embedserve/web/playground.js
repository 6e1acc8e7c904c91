// The playground: embed the texts (and a query) with one or two settings, draw their
// similarities and rankings, rerank, and show the exact request as code.

import { hasKey, post } from "./api.js";
import { el, heatmap, rankedBars, shorten } from "./charts.js";
import { asNumbers, cosine, ranking, similarityMatrix } from "./vectors.js";

// int8 codes are offset and scaled per dimension, so their cosine is not the float vectors':
// it is what a store that keeps the codes computes.
const HEATMAP_OF = {
  float: "Of the vectors as the API returned them.",
  int8: "Of the int8 codes as the API returned them, as a vector store that keeps them computes it (not the float vectors' cosine).",
  binary: "Of the sign bits, unpacked to +1/-1: 1 - 2 × Hamming distance / bits.",
};

const EXAMPLE_TEXTS = [
  "A passport can be renewed online or at a post office with a recent photo.",
  "The museum opens at nine and closes at five on weekdays.",
  "Renewal forms must be signed and sent together with the old passport.",
  "Cats sleep for most of the day.",
  "Visa applications take about two weeks to process.",
];
const EXAMPLE_QUERY = "How do I renew my passport?";

let cards = [];

// The served models (cards from /v1/models) in the model pickers.
export function showModels(models) {
  cards = models;
  const embedders = models.filter((m) => m.task !== "rerank");
  const rerankers = models.filter((m) => m.task === "rerank");
  for (const id of ["model-a", "model-b"]) fill(document.getElementById(id), embedders);
  const rerank = document.getElementById("reranker");
  const chosen = rerank.value;
  fill(rerank, rerankers, "none");
  document.getElementById("reranker-field").hidden = rerankers.length === 0;
  if (rerankers.length) rerank.value = chosen || rerankers[0].id;
}

export function initPlayground(showError, clearError) {
  const texts = document.getElementById("texts");
  if (!texts.value) texts.value = EXAMPLE_TEXTS.join("\n");
  const query = document.getElementById("query");
  if (!query.value) query.value = EXAMPLE_QUERY;

  const compare = document.getElementById("compare");
  compare.addEventListener("change", () => {
    // The box sits in the fieldset's legend, which a disabled fieldset leaves enabled.
    document.getElementById("settings-b").disabled = !compare.checked;
  });
  document.getElementById("settings-b").disabled = !compare.checked;

  document.getElementById("embed-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const status = document.getElementById("status");
    const button = document.getElementById("embed");
    button.disabled = true;
    status.textContent = "Embedding…";
    try {
      await run();
      status.textContent = "";
    } catch (error) {
      status.textContent = "Failed: see the error above.";
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
  }
}

function fill(select, models, empty) {
  const keep = select.value;
  select.replaceChildren();
  if (empty) select.append(el("option", { value: "" }, empty));
  for (const card of models) select.append(el("option", { value: card.id }, card.id));
  if (models.some((m) => m.id === keep)) select.value = keep;
}

function settings(side) {
  const dims = document.getElementById(`dims-${side}`).value.trim();
  return {
    model: document.getElementById(`model-${side}`).value,
    inputType: document.getElementById(`type-${side}`).value,
    dimensions: dims ? Number(dims) : null,
    encoding: document.getElementById(`enc-${side}`).value,
  };
}

function bodyFor(setting, input, inputType) {
  const body = { model: setting.model, input, encoding_format: setting.encoding };
  if (inputType) body.input_type = inputType;
  if (setting.dimensions !== null) body.dimensions = setting.dimensions;
  return body;
}

async function embedWith(setting, texts, query) {
  const requests = [bodyFor(setting, texts, "document")];
  if (query) requests.push(bodyFor(setting, [query], setting.inputType));
  const answers = await Promise.all(requests.map((body) => post("/v1/embeddings", body)));
  const rows = (answer) => answer.data.data
    .sort((a, b) => a.index - b.index)
    .map((d) => asNumbers(d.embedding, setting.encoding));
  const vectors = rows(answers[0]);
  const queryVector = query ? rows(answers[1])[0] : null;
  return {
    setting,
    requests,
    vectors,
    scores: queryVector ? vectors.map((v) => cosine(queryVector, v)) : null,
    tokens: answers.reduce((sum, a) => sum + a.data.usage.prompt_tokens, 0),
    ms: answers.map((a) => a.ms),
    dimension: answers[0].data.data[0].embedding.length,
  };
}

async function run() {
  const texts = document.getElementById("texts").value.split("\n").filter((t) => t.trim());
  if (texts.length === 0) throw new Error("Enter at least one text, one per line.");
  const query = document.getElementById("query").value.trim();
  const compare = document.getElementById("compare").checked;
  const reranker = query ? document.getElementById("reranker").value : "";
  const a = settings("a");
  const jobs = [embedWith(a, texts, query), tokenCounts(a.model, texts)];
  jobs.push(compare ? embedWith(settings("b"), texts, query) : null);
  jobs.push(reranker ? post("/v1/rerank", { model: reranker, query, documents: texts }) : null);
  const [first, tokens, second, reranked] = await Promise.all(jobs);

  document.getElementById("results").hidden = false;
  summary(first, second, reranked);
  const cellValue = document.getElementById("cell-value");
  document.getElementById("heatmap-of").textContent = HEATMAP_OF[first.setting.encoding];
  heatmap(document.getElementById("heatmap"), texts, similarityMatrix(first.vectors),
    (i, j, value) => { cellValue.textContent = `Text ${i + 1} × text ${j + 1}: ${value.toFixed(4)}`; });
  tokenTable(texts, tokens, a.model);
  rankings(texts, first, second, reranked);
  code(first);
}

async function tokenCounts(model, texts) {
  try {
    const { data } = await post("/tokenize", { inputs: texts, model, prompt_name: "document" });
    return data.map((tokens) => tokens.length);
  } catch (error) {
    if (error.status === 400 || error.status === 422) return null;  // e.g. an upstream model
    throw error;
  }
}

function label(result) {
  const s = result.setting;
  const parts = [s.model, s.encoding];
  if (s.dimensions !== null) parts.push(`${s.dimensions} dims`);
  if (s.inputType) parts.push(`query as ${s.inputType}`);
  return parts.join(" · ");
}

function summary(first, second, reranked) {
  const list = document.getElementById("summary");
  list.replaceChildren();
  const add = (name, value, key) => {
    list.append(el("dt", {}, name), el("dd", key ? { "data-figure": key } : {}, value));
  };
  for (const [name, result] of [["A", first], ["B", second]]) {
    if (!result) continue;
    const prefix = second ? `${name}: ` : "";
    add(`${prefix}settings`, label(result));
    add(`${prefix}latency`, result.ms.map((ms) => `${ms.toFixed(1)} ms`).join(" + "), `latency-${name}`);
    add(`${prefix}usage`, `${result.tokens} prompt tokens`, `usage-${name}`);
    add(`${prefix}vector`, `${result.dimension} ${result.setting.encoding === "binary" ? "bytes" : "numbers"}`);
  }
  if (reranked) {
    add("rerank latency", `${reranked.ms.toFixed(1)} ms`, "latency-rerank");
    add("rerank usage", `${reranked.data.usage.total_tokens} tokens`);
  }
}

function tokenTable(texts, counts, model) {
  const card = cards.find((c) => c.id === model || (c.aliases || []).includes(model));
  const limit = card ? card.max_tokens : Infinity;
  const body = document.querySelector("#tokens tbody");
  body.replaceChildren(...texts.map((text, i) => {
    const count = counts ? counts[i] : null;
    const truncated = count !== null && count > limit;
    const row = el("tr", { "data-tokens": count ?? "", "data-truncated": String(truncated) });
    row.append(el("td", {}, String(i + 1)), el("td", { class: "text", title: text }, shorten(text, 160)),
      el("td", {}, count === null ? "–" : String(count)),
      el("td", {}, count === null ? "–" : truncated ? `yes, to ${limit}` : "no"));
    return row;
  }));
}

// Each ranking's rows, and for every ranking after the first how each row moved against it.
function rankings(texts, first, second, reranked) {
  const panel = document.getElementById("rankings-panel");
  const container = document.getElementById("rankings");
  container.replaceChildren();
  panel.hidden = first.scores === null;
  if (first.scores === null) return;
  const base = ranking(first.scores);
  const rows = (order, scores) => order.map((index) => ({ index, score: scores[index], text: texts[index] }));
  rankedBars(container, second ? `A: ${label(first)}` : `Embedding: ${label(first)}`, rows(base, first.scores));
  if (second) {
    const order = ranking(second.scores);
    rankedBars(container, `B: ${label(second)}`, rows(order, second.scores), moves(base, order, "A"));
  }
  if (reranked) {
    const scores = [];
    reranked.data.results.forEach((r) => { scores[r.index] = r.relevance_score; });
    const order = reranked.data.results.map((r) => r.index);
    rankedBars(container, `Reranked: ${reranked.data.model}`, rows(order, scores), moves(base, order, "the embedding ranking"));
  }
}

function moves(base, order, against) {
  return order.map((index, position) => {
    const by = base.indexOf(index) - position;  // > 0: rose
    if (by === 0) return { moved: false, by, label: "=", title: `same place as in ${against}` };
    return {
      moved: true,
      by,
      label: by > 0 ? `▲${by}` : `▼${-by}`,
      title: `${Math.abs(by)} place(s) ${by > 0 ? "higher" : "lower"} than in ${against}`,
    };
  });
}

function code(result) {
  const origin = window.location.origin;
  const auth = hasKey() ? ' \\\n  -H "Authorization: Bearer $EMBEDSERVE_API_KEY"' : "";
  document.getElementById("code-curl").textContent = result.requests.map((body) =>
    `curl ${origin}/v1/embeddings \\\n  -H "Content-Type: application/json"${auth} \\\n` +
    `  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`).join("\n\n");
  const key = hasKey() ? 'os.environ["EMBEDSERVE_API_KEY"]' : '"none"';
  const lines = ["import os", "", "from openai import OpenAI", "",
    `client = OpenAI(base_url="${origin}/v1", api_key=${key})`];
  result.requests.forEach((body, i) => {
    const extra = body.input_type ? `,\n    extra_body={"input_type": ${JSON.stringify(body.input_type)}}` : "";
    const dims = body.dimensions ? `,\n    dimensions=${body.dimensions}` : "";
    lines.push("", `${i ? "query" : "texts"} = client.embeddings.create(`,
      `    model=${JSON.stringify(body.model)},`,
      `    input=${JSON.stringify(body.input)},`,
      `    encoding_format=${JSON.stringify(body.encoding_format)}${dims}${extra},`, ")");
  });
  lines.push("", "vectors = [item.embedding for item in texts.data]");
  document.getElementById("code-python").textContent = lines.join("\n");
}
