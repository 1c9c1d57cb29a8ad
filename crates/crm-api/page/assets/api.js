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
    const init = { method, headers: this.headers(), cache: "no-store" };
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
 * the last event it saw, after the server's `retry:` delay. Calls `onEvent(type, data, id)`
 * for each event (`reset` included) and `onState("live" | "reconnecting" | "off")`.
 */
export async function follow(api, { onEvent, onState, signal }) {
  let lastId = null;
  let retry = 2000;
  while (!signal.aborted) {
    try {
      const headers = api.headers({ Accept: "text/event-stream" });
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const resp = await fetch("/api/events", { headers, signal, cache: "no-store" });
      if (resp.status === 401 || resp.status === 403) {
        onState("off");
        throw new ApiError(resp.status, await resp.json().catch(() => null));
      }
      if (!resp.ok || !resp.body) throw new ApiError(resp.status, null);
      onState("live");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = { data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl;
        while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
          if (line === "") {
            if (event.data.length > 0) {
              if (event.id !== undefined) lastId = event.id;
              let data = null;
              try {
                data = JSON.parse(event.data.join("\n"));
              } catch {
                data = null;
              }
              onEvent(event.type || "message", data, event.id);
            } else if (event.id !== undefined) {
              lastId = event.id;
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
          else if (field === "retry" && /^\d+$/.test(val)) retry = Number(val);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return;
    }
    if (signal.aborted) return;
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}
