// The page's drawings: the similarity heatmap, score bars and the server view's small line
// charts, built as SVG and DOM nodes (text always as textContent, never as markup).

const SVG = "http://www.w3.org/2000/svg";

export function el(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function shorten(text, length) {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length <= length ? flat : `${flat.slice(0, length - 1)}…`;
}

// Low similarity pale, high dark: one hue, so it reads in both colour schemes and in grey.
export function colour(value) {
  const t = Math.max(0, Math.min(1, (value + 0.2) / 1.2));
  return `hsl(212, 75%, ${Math.round(96 - t * 62)}%)`;
}

// The texts' similarity matrix; `onCell(row, col, value)` hears hover and focus.
export function heatmap(container, labels, matrix, onCell) {
  const n = labels.length;
  const cell = n <= 8 ? 44 : n <= 16 ? 30 : 18;
  const left = 150;
  const top = 28;
  const width = left + n * cell + 70;
  const height = top + n * cell + 8;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": `Cosine similarity of ${n} texts`,
  });
  labels.forEach((label, i) => {
    root.append(svg("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, class: "row-label" },
      `${i + 1}. ${shorten(label, 18)}`));
    root.append(svg("text", { x: left + i * cell + cell / 2, y: top - 8, class: "col-label" },
      String(i + 1)));
  });
  matrix.forEach((row, i) => {
    row.forEach((value, j) => {
      const rect = svg("rect", {
        x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1,
        fill: colour(value), class: "cell", tabindex: 0,
        "data-row": i, "data-col": j, "data-value": value,
        "aria-label": `text ${i + 1} and text ${j + 1}: ${value.toFixed(4)}`,
      });
      rect.append(svg("title", {}, `${i + 1} × ${j + 1}: ${value.toFixed(4)}`));
      const tell = () => onCell(i, j, value);
      rect.addEventListener("mouseenter", tell);
      rect.addEventListener("focus", tell);
      root.append(rect);
      if (cell >= 30) {
        const dark = value > 0.45;
        root.append(svg("text", {
          x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4,
          class: dark ? "cell-text dark" : "cell-text",
        }, value.toFixed(2)));
      }
    });
  });
  // The colour scale, from -0.2 to 1.
  const scaleX = left + n * cell + 24;
  const steps = 12;
  for (let s = 0; s < steps; s += 1) {
    const value = 1 - (s / (steps - 1)) * 1.2;
    const h = (n * cell) / steps;
    root.append(svg("rect", { x: scaleX, y: top + s * h, width: 12, height: h + 0.5, fill: colour(value) }));
  }
  root.append(svg("text", { x: scaleX + 16, y: top + 9, class: "scale-label" }, "1"));
  root.append(svg("text", { x: scaleX + 16, y: top + n * cell, class: "scale-label" }, "-0.2"));
  container.replaceChildren(root);
}

// A ranked list with each score as a bar; `marks[k]` (optional) says how row k moved.
export function rankedBars(container, title, rows, marks) {
  const list = el("ol", { class: "ranking" });
  const top = Math.max(...rows.map((r) => Math.abs(r.score)), 1e-9);
  rows.forEach((row, position) => {
    const item = el("li", { class: "rank", "data-index": row.index, "data-score": row.score });
    const mark = marks ? marks[position] : null;
    if (mark) {
      item.classList.toggle("moved", mark.moved);
      item.dataset.moved = mark.moved ? String(mark.by) : "0";
      item.append(el("span", { class: "move", title: mark.title }, mark.label));
    }
    item.append(el("span", { class: "label" }, `${row.index + 1}. ${shorten(row.text, 60)}`));
    const bar = el("span", { class: "bar" });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.max(0, (row.score / top) * 100).toFixed(1)}%`;
    bar.append(fill);
    item.append(bar, el("span", { class: "score" }, row.score.toFixed(4)));
    list.append(item);
  });
  const column = el("div", { class: "column" });
  column.append(el("h3", {}, title), list);
  container.append(column);
}

// A small line chart of `points` ({t, v}) over the last `span` ms, with its latest value.
export function sparkline(container, label, points, unit, span) {
  const width = 260;
  const height = 64;
  const now = points.length ? points[points.length - 1].t : 0;
  const values = points.map((p) => p.v).filter((v) => Number.isFinite(v));
  const max = Math.max(...values, 1e-9);
  const latest = values.length ? values[values.length - 1] : NaN;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img",
    "aria-label": `${label} over the last minutes` });
  const path = points
    .filter((p) => Number.isFinite(p.v))
    .map((p, i) => {
      const x = width - ((now - p.t) / span) * width;
      const y = height - 4 - (p.v / max) * (height - 12);
      return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join("");
  if (path) root.append(svg("path", { d: path, class: "line" }));
  const box = el("figure", { class: "chart", "data-metric": label, "data-value": latest });
  const caption = el("figcaption");
  caption.append(el("span", { class: "name" }, label),
    el("span", { class: "value" }, Number.isFinite(latest) ? `${format(latest)} ${unit}` : "–"));
  box.append(caption, root);
  container.append(box);
}

function format(value) {
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}
