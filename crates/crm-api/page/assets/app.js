// The supervisor's page: signs in, reads the state through the public API, keeps it live
// from the event stream, and sends the supervisor's changes. See docs/dashboard.md.

import { Api, follow } from "./api.js";
import { onSettled, toast } from "./dom.js";
import { closeDrawer, openDrawer, refreshDrawer } from "./drawer.js";
import { renderOperators, renderQueue, renderSources, tick } from "./views.js";

/** Where the credential is kept: this tab's session storage, nowhere else. */
const TOKEN_KEY = "mini-crm.token";
/** The reports (the day's distribution, the last hour's assignments) scan history: they
 * are read on their own, at most this often (ms), never holding up the live board. */
const REPORTS_EVERY = 15000;
/** A failed refresh is tried again after this long (ms), doubling up to a minute. */
const RETRY_FIRST = 2000;

/** Everything the board shows and the supervisor has typed; `fresh()` is a signed-out state. */
function fresh() {
  return {
    api: null,
    role: null,
    canWrite: false,
    operators: [],
    stats: new Map(),
    sources: [],
    queue: [],
    waiting: [],
    distribution: new Map(),
    expanded: new Set(),
    openContacts: new Map(),
    drafts: new Map(),
    previews: new Map(),
    limitDrafts: new Map(),
    assignTo: new Map(),
    skew: 0,
    drawer: null,
    stream: null,
    loaded: false,
  };
}

const state = fresh();
/** Counts sign-ins: work started for an earlier one is dropped when it finishes. */
let session = 0;

const $ = (id) => document.getElementById(id);

async function boot() {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    $("signin-error").textContent = "";
    if (await start(token)) {
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("drawer-close").addEventListener("click", () => closeDrawer(state));
  $("scrim").addEventListener("click", () => closeDrawer(state));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.drawer !== null) closeDrawer(state);
  });
  setInterval(() => tick(state), 1000);
  onSettled(() => {
    if (state.loaded) render();
  });
  setInterval(() => {
    if (state.api) reports();
  }, REPORTS_EVERY);

  const stored = sessionStorage.getItem(TOKEN_KEY);
  // Without a stored credential, the API may be open (no admin token: loopback only).
  const outcome = await start(stored, true);
  if (outcome === true) return;
  if (outcome === "refused") sessionStorage.removeItem(TOKEN_KEY);
  showSignIn();
}

function showSignIn(message = "") {
  $("board").hidden = true;
  $("jump").hidden = true;
  $("live").hidden = true;
  $("signin").hidden = false;
  $("sign-out").hidden = true;
  $("role").hidden = true;
  $("signin-error").textContent = message;
  $("token").focus();
}

/**
 * Signs in with `token` (`null`: no credential): `true` when accepted, `"refused"` when the
 * server refused it, `false` when the server could not be asked.
 */
async function start(token, quiet = false) {
  const fail = (outcome, message) => {
    if (!quiet) $("signin-error").textContent = message;
    return outcome;
  };
  if (token && token.startsWith("crm_sk_")) {
    return fail("refused", "That is a source key: it can only register contacts. Use the admin token or a viewer key.");
  }
  const api = new Api(token || null);
  try {
    await api.get("/api/sources");
  } catch (err) {
    if (err.status === 401) return fail("refused", "This token or key is not valid (or was revoked).");
    if (err.status === 403) return fail("refused", "This credential may not read the board.");
    return fail(false, `The service did not answer: ${err.message}`);
  }
  session += 1;
  Object.assign(state, fresh());
  state.api = api;
  // The credential's own form says what it is: a viewer key starts `crm_vk_` (see
  // docs/security.md); anything else the server accepted is the admin token. The server
  // decides either way: a viewer's write is refused whatever the page shows.
  state.role = !token ? "open" : token.startsWith("crm_vk_") ? "viewer" : "admin";
  state.canWrite = state.role !== "viewer";
  $("signin").hidden = true;
  $("board").hidden = false;
  $("jump").hidden = false;
  $("live").hidden = false;
  $("role").hidden = false;
  $("role").textContent = { open: "Open access", admin: "Admin", viewer: "Viewer · read only" }[state.role];
  $("role").dataset.role = state.role;
  $("sign-out").hidden = !token;
  live();
  await refresh();
  reports();
  return true;
}

function signOut(message = "") {
  session += 1;
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.abort();
  clearTimeout(timer);
  timer = null;
  closeDrawer(state);
  Object.assign(state, fresh());
  setLive("off");
  showSignIn(message);
}

/** Follows the event stream; every event refreshes what it may have changed. */
function live() {
  const controller = new AbortController();
  state.stream = controller;
  follow(state.api, {
    signal: controller.signal,
    onState: (s, fresh) => {
      setLive(s);
      // A stream that starts from "now" misses what happened before it: read it all.
      if (s === "live" && fresh) schedule();
    },
    onUnauthorized: () => signOut("The credential was refused: the key was revoked or the token changed."),
    onEvent: (type, data) => {
      if (type === "reset") {
        // Events were missed (pruned, or another database): read everything again.
        schedule(true);
        return;
      }
      const kind = (data && data.type) || "";
      const contact = data && data.data && data.data.contact_id;
      if (contact && contact === state.drawer) refreshDrawer(state).catch(() => {});
      schedule(!kind.startsWith("contact."));
    },
  });
}

function setLive(s) {
  const el = $("live");
  el.dataset.state = s;
  el.textContent = { live: "Live", reconnecting: "Reconnecting…", off: "Offline", stale: "Not up to date" }[s];
}

let timer = null;
let wanted = false;
let wantReports = false;
let running = false;
let retryIn = RETRY_FIRST;

/** A refresh soon, coalescing a burst of events into one; `reports` reads them too. */
function schedule(withReports = false) {
  wantReports ||= withReports;
  if (timer) return;
  timer = setTimeout(() => {
    timer = null;
    refresh();
  }, 60);
}

/** Reads the board's state and renders it, again while more was asked for meanwhile;
 * one loop at a time. A failure is tried again later, and the header says so. */
async function refresh() {
  wanted = true;
  if (running) return;
  running = true;
  const mine = session;
  try {
    while (wanted && mine === session) {
      wanted = false;
      if (wantReports) {
        wantReports = false;
        reports();
      }
      try {
        await load(mine);
        if (mine !== session) return;
        render();
        retryIn = RETRY_FIRST;
        if ($("live").dataset.state === "stale") setLive("live");
      } catch (err) {
        if (mine !== session) return;
        if (err.status === 401) {
          signOut("The credential was refused: the key was revoked or the token changed.");
          return;
        }
        setLive("stale");
        toast(`Could not refresh: ${err.message}`, true);
        setTimeout(() => {
          if (mine === session) refresh();
        }, retryIn);
        retryIn = Math.min(retryIn * 2, 60000);
        return;
      }
    }
  } finally {
    running = false;
  }
}

async function load(mine) {
  const api = state.api;
  const [operators, sources, queue, waiting] = await Promise.all([
    api.get("/api/operators"),
    api.get("/api/sources"),
    api.get("/api/queue?limit=1000"),
    api.get("/api/contacts?status=open&unassigned=true&limit=100"),
  ]);
  const open = await Promise.all([...state.expanded].map(async (id) =>
    [id, await api.get(`/api/contacts?status=open&operator_id=${id}&limit=100`)]));
  if (mine !== session) return;
  state.operators = operators;
  state.sources = sources;
  state.queue = queue;
  state.waiting = waiting;
  state.openContacts = new Map(open);
  state.loaded = true;
  if (queue.length > 0) {
    const q = queue[0];
    state.skew = Date.now() - Date.parse(q.oldest_since) - q.oldest_wait_seconds * 1000;
  }
}

let reading = false;

/** Reads the reports (last hour's assignments, the day's shares) on their own, one read
 * at a time, and renders the operators when they come. */
async function reports() {
  if (reading || !state.api) return;
  reading = true;
  const mine = session;
  try {
    const api = state.api;
    const sources = state.sources.length ? state.sources : await api.get("/api/sources");
    const [stats, dists] = await Promise.all([
      api.get("/api/stats/operators"),
      Promise.all(sources.map(async (s) => [s.id, await api.get(`/api/sources/${s.id}/distribution`)])),
    ]);
    if (mine !== session) return;
    state.stats = new Map(stats.map((s) => [s.operator_id, s]));
    state.distribution = new Map(dists);
    if (state.loaded) renderOperators(state, actions);
  } catch (err) {
    if (mine === session && err.status !== 401) console.warn("mini-crm: the reports could not be read", err);
  } finally {
    reading = false;
  }
}

function render() {
  renderQueue(state, actions);
  renderOperators(state, actions);
  renderSources(state, actions);
}

/** Runs a change, says how it went, and reads the state again either way. */
async function change(what, run) {
  const mine = session;
  try {
    await run();
    if (mine === session) toast(what);
  } catch (err) {
    if (mine === session) toast(err.message, true);
  }
  if (mine === session) await refresh();
}

/** A whole number from a field, or `null`. */
function whole(value, min) {
  const text = String(value).trim();
  if (!/^\d+$/.test(text)) return null;
  const n = Number(text);
  return n >= min ? n : null;
}

const actions = {
  openContact: (id, opener) => openDrawer(state, id, opener).catch((err) => toast(err.message, true)),
  expand: (id, open) => {
    if (open === state.expanded.has(id)) return;
    if (open) state.expanded.add(id);
    else state.expanded.delete(id);
    schedule();
  },
  setActive: (id, active) => change("Operator saved", () => state.api.patch(`/api/operators/${id}`, { is_active: active })),
  draftLimit: (id, value) => state.limitDrafts.set(id, value),
  saveLimit: (id, field) => {
    // Only the field the supervisor left or pressed Enter in, never one a refresh replaced.
    if (!field.isConnected || !state.limitDrafts.has(id)) return;
    const limit = whole(state.limitDrafts.get(id), 0);
    state.limitDrafts.delete(id);
    // Settled: the section may be rendered again around it.
    field.defaultValue = field.value;
    const current = state.operators.find((o) => o.id === id);
    if (limit === null) {
      toast("The limit is a whole number, 0 or more.", true);
      render();
      return;
    }
    if (current && current.max_active_contacts === limit) return;
    change("Limit saved", () => state.api.patch(`/api/operators/${id}`, { max_active_contacts: limit }));
  },
  patchSource: (id, body) => change("Source saved", () => state.api.patch(`/api/sources/${id}`, body)),
  chooseAssignee: (contactId, operatorId) => {
    if (operatorId) state.assignTo.set(contactId, operatorId);
    else state.assignTo.delete(contactId);
  },
  assign: (id) => {
    const to = state.assignTo.get(id);
    if (!to) {
      toast("Choose an operator first.", true);
      return;
    }
    state.assignTo.delete(id);
    change(`Contact #${id} assigned`, () => state.api.post(`/api/contacts/${id}/assign`, { operator_id: to }));
  },
  close: (id) => change(`Contact #${id} closed`, () => state.api.post(`/api/contacts/${id}/close`)),
  unassign: (id) => change(`Contact #${id} back in the queue`, () => state.api.post(`/api/contacts/${id}/unassign`)),
  draftWeight: (sourceId, operatorId, value) => {
    if (!state.drafts.has(sourceId)) state.drafts.set(sourceId, new Map());
    state.drafts.get(sourceId).set(operatorId, value);
    // The dry run shown was for other weights: it goes (the card itself is rendered
    // again once the field is left).
    if (state.previews.delete(sourceId)) {
      document.querySelectorAll(`#source-${sourceId} td.compare`).forEach((td) => td.replaceChildren());
      document.getElementById(`preview-result-${sourceId}`)?.remove();
    }
    const apply = document.getElementById(`apply-${sourceId}`);
    if (apply) apply.disabled = !state.canWrite;
    renderSources(state, actions);
  },
  discard: (sourceId) => {
    state.drafts.delete(sourceId);
    state.previews.delete(sourceId);
    renderSources(state, actions);
  },
  preview: async (sourceId) => {
    const weights = proposed(sourceId);
    if (weights === null) return;
    const asked = JSON.stringify(weights);
    const mine = session;
    try {
      const result = await state.api.post(`/api/sources/${sourceId}/simulate`, { operators: weights });
      // An answer to weights that were edited since is not theirs.
      if (mine !== session || JSON.stringify(proposed(sourceId, true)) !== asked) return;
      state.previews.set(sourceId, result);
      renderSources(state, actions);
    } catch (err) {
      toast(err.message, true);
    }
  },
  apply: (sourceId) => {
    const weights = proposed(sourceId);
    if (weights === null) return;
    change("Weights applied", async () => {
      await state.api.put(`/api/sources/${sourceId}/operators`, { operators: weights });
      state.drafts.delete(sourceId);
      state.previews.delete(sourceId);
    });
  },
};

/** The weights the editor shows for a source (the draft over the current ones, zeros left
 * out), or `null` after saying what is wrong (`quiet`: without saying). */
function proposed(sourceId, quiet = false) {
  const source = state.sources.find((s) => s.id === sourceId);
  const weights = new Map((source ? source.operators : []).map((w) => [w.operator_id, String(w.weight)]));
  for (const [id, value] of state.drafts.get(sourceId) || []) weights.set(id, value);
  const out = [];
  for (const [operatorId, value] of weights) {
    const weight = whole(value === "" ? "0" : value, 0);
    if (weight === null) {
      if (!quiet) toast("A weight is a whole number, 0 or more (0 takes the operator off the source).", true);
      return null;
    }
    if (weight > 0) out.push({ operator_id: operatorId, weight });
  }
  return out;
}

boot();
