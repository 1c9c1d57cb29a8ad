// The public HTTP API, as the page uses it: JSON in and out, problem details as errors,
// and the event stream read with fetch() so the credential travels in a header (an
// EventSource cannot send one; no credential goes into a URL or a cookie).

/** A problem answer (RFC 9457) from the API. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = problem && problem.code;
  }
}

/** How long a request may take before it counts as failed (ms). */
const REQUEST_TIMEOUT = 15000;

/** Silence on the stream after which it counts as dead (ms): the server sends a comment
 * every 15 s, so a connection silent for this long was dropped somewhere on the way. */
const SILENCE = 45000;

export class Api {
  /** `token`: the admin token or a viewer key; `null` when the API is open. */
  constructor(token) {
    this.token = token;
  }

  headers(extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async request(method, path, body) {
    // A request that hangs must not hold every later refresh behind it.
    const init = { method, headers: this.headers(), cache: "no-store", signal: AbortSignal.timeout(REQUEST_TIMEOUT) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { detail: text };
      }
    }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body = {}) {
    return this.request("POST", path, body);
  }

  patch(path, body) {
    return this.request("PATCH", path, body);
  }

  put(path, body) {
    return this.request("PUT", path, body);
  }
}

/**
 * Reads `GET /api/events` until `signal` aborts, reconnecting with `Last-Event-ID` after
 * the last event it saw, after the server's `retry:` delay.
 * - `onEvent(type, data, id)` for each event (`reset` included);
 * - `onState("live" | "reconnecting" | "off", fresh)`: "live" once the server has fixed the
 *   stream's position (its `retry:` line comes after that), with `fresh` true when the
 *   stream did not resume after a seen event, so the caller must read the state again to
 *   miss nothing from before;
 * - `onUnauthorized(error)` when the credential is refused (401/403); the stream stops.
 */
export async function follow(api, { onEvent, onState, onUnauthorized, signal }) {
  let lastId = null;
  let retry = 2000;
  while (!signal.aborted) {
    const connection = new AbortController();
    const stop = () => connection.abort();
    signal.addEventListener("abort", stop);
    let watchdog = null;
    const heard = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => connection.abort(), SILENCE);
    };
    try {
      const headers = api.headers({ Accept: "text/event-stream" });
      const resumed = lastId !== null;
      if (resumed) headers["Last-Event-ID"] = lastId;
      heard();
      const resp = await fetch("/api/events", { headers, signal: connection.signal, cache: "no-store" });
      if (resp.status === 401 || resp.status === 403) {
        onState("off", false);
        onUnauthorized(new ApiError(resp.status, await resp.json().catch(() => null)));
        return;
      }
      if (!resp.ok || !resp.body) throw new ApiError(resp.status, null);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let announced = false;
      const announce = () => {
        if (!announced) {
          announced = true;
          onState("live", !resumed);
        }
      };
      let buffer = "";
      let event = { data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        heard();
        buffer += value;
        // Whole lines only; a `\r` at the end may be the first half of `\r\n`.
        const lines = buffer.split(/\r\n|\r(?!$)|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (event.id !== undefined) lastId = event.id;
            if (event.data.length > 0) {
              announce();
              let data = null;
              try {
                data = JSON.parse(event.data.join("\n"));
              } catch {
                data = null;
              }
              try {
                onEvent(event.type || "message", data, event.id);
              } catch (err) {
                console.error("mini-crm: an event could not be handled", err);
              }
            }
            event = { data: [] };
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") event.data.push(val);
          else if (field === "event") event.type = val;
          else if (field === "id" && !val.includes("\0")) event.id = val;
          else if (field === "retry" && /^\d+$/.test(val)) {
            retry = Number(val);
            announce();
          }
        }
      }
    } catch {
      // Dropped, refused, timed out by the watchdog, or aborted: reconnect unless stopped.
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", stop);
    }
    if (signal.aborted) return;
    onState("reconnecting", false);
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}
