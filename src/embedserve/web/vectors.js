// Vectors as the API returns them, and the similarities the page shows. Float and int8
// vectors are compared by cosine as they are; a binary vector is its packed sign bits
// (sentence-transformers' "binary": each byte minus 128), unpacked to +1/-1 first, so its
// cosine is 1 - 2 * hamming / bits.

export function asNumbers(row, encoding) {
  if (encoding !== "binary") return row;
  const signs = [];
  for (const packed of row) {
    const byte = packed + 128;
    for (let bit = 7; bit >= 0; bit -= 1) signs.push((byte >> bit) & 1 ? 1 : -1);
  }
  return signs;
}

export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

export function similarityMatrix(vectors) {
  return vectors.map((a) => vectors.map((b) => cosine(a, b)));
}

// Indexes of `scores`, best first (ties keep the texts' order).
export function ranking(scores) {
  return scores
    .map((score, index) => ({ score, index }))
    .sort((x, y) => y.score - x.score || x.index - y.index)
    .map((entry) => entry.index);
}
