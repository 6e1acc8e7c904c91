// The server's public API, as any client calls it. The key lives in this module's memory
// only: never in storage or the URL, gone on reload.

let apiKey = "";
const keyListeners = [];

export function setKey(key) {
  apiKey = key.trim();
}

export function hasKey() {
  return apiKey !== "";
}

// Called with the failed response's body when the server asks for a key (401).
export function onKeyNeeded(listener) {
  keyListeners.push(listener);
}

export class ApiError extends Error {
  constructor(status, body, path) {
    super(`${status} from ${path}`);
    this.status = status;
    this.body = body;
    this.path = path;
  }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

// The parsed JSON (or text) and the round trip in ms; an ApiError carrying the server's own
// error body otherwise.
export async function call(method, path, body) {
  const started = performance.now();
  const response = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  const ms = performance.now() - started;
  let data = text;
  if ((response.headers.get("content-type") || "").includes("json")) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data, path);
    if (response.status === 401) keyListeners.forEach((listener) => listener(error));
    throw error;
  }
  return { data, ms };
}

export const post = (path, body) => call("POST", path, body);
export const get = (path) => call("GET", path);
