// The supervisor's page: signs in, reads the state through the public API, keeps it live
// from the event stream, and sends the supervisor's changes. See docs/dashboard.md.

import { Api, follow } from "./api.js";
import { toast } from "./dom.js";
import { closeDrawer, openDrawer, refreshDrawer } from "./drawer.js";
import { renderOperators, renderQueue, renderSources, tick } from "./views.js";

/** Where the credential is kept: this tab's session storage, nowhere else. */
const TOKEN_KEY = "mini-crm.token";
/** The distribution is a day's statistics: read again at most this often (ms). */
const DISTRIBUTION_EVERY = 5000;

const state = {
  api: null,
  role: null,
  canWrite: false,
  operators: [],
  stats: new Map(),
  sources: [],
  queue: [],
  waiting: [],
  distribution: new Map(),
  distributionAt: 0,
  expanded: new Set(),
  openContacts: new Map(),
  drafts: new Map(),
  previews: new Map(),
  skew: 0,
  drawer: null,
  stream: null,
};

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
  $("sign-out").addEventListener("click", signOut);
  $("drawer-close").addEventListener("click", () => closeDrawer(state));
  $("scrim").addEventListener("click", () => closeDrawer(state));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.drawer !== null) closeDrawer(state);
  });
  setInterval(() => tick(state), 1000);

  const stored = sessionStorage.getItem(TOKEN_KEY);
  // Without a stored credential, the API may be open (no admin token: loopback only).
  if (await start(stored, true)) return;
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn();
}

function showSignIn() {
  $("board").hidden = true;
  $("signin").hidden = false;
  $("sign-out").hidden = true;
  $("role").hidden = true;
  $("token").focus();
}

/** Signs in with `token` (`null`: no credential); `false` when it is not accepted. */
async function start(token, quiet = false) {
  const error = (message) => {
    if (!quiet) $("signin-error").textContent = message;
    return false;
  };
  if (token && token.startsWith("crm_sk_")) {
    return error("That is a source key: it can only register contacts. Use the admin token or a viewer key.");
  }
  const api = new Api(token || null);
  try {
    await api.get("/api/sources");
  } catch (err) {
    if (err.status === 401) return error("This token or key is not valid (or was revoked).");
    if (err.status === 403) return error("This credential may not read the board.");
    return error(`The service did not answer: ${err.message}`);
  }
  state.api = api;
  // The credential's own form says what it is: a viewer key starts `crm_vk_` (see
  // docs/security.md); anything else the server accepted is the admin token.
  state.role = !token ? "open" : token.startsWith("crm_vk_") ? "viewer" : "admin";
  state.canWrite = state.role !== "viewer";
  $("signin").hidden = true;
  $("board").hidden = false;
  $("role").hidden = false;
  $("role").textContent = { open: "Open access", admin: "Admin", viewer: "Viewer · read only" }[state.role];
  $("role").dataset.role = state.role;
  $("sign-out").hidden = token === null || token === "";
  document.body.dataset.role = state.role;
  await refresh(true);
  live();
  return true;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.abort();
  state.api = null;
  closeDrawer(state);
  setLive("off");
  showSignIn();
}

/** Follows the event stream; every event refreshes what it may have changed. */
function live() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  follow(state.api, {
    signal: controller.signal,
    onState: setLive,
    onEvent: (type, data) => {
      if (type === "reset") {
        // Events were missed (pruned, or another database): read everything again.
        schedule(true);
        return;
      }
      const kind = data && data.type;
      const contact = data && data.data && data.data.contact_id;
      if (contact && contact === state.drawer) refreshDrawer(state).catch(() => {});
      schedule(typeof kind === "string" && !kind.startsWith("contact."));
    },
  });
}

function setLive(s) {
  const el = $("live");
  el.dataset.state = s;
  el.textContent = { live: "Live", reconnecting: "Reconnecting…", off: "Offline" }[s];
}

let running = null;
let again = false;
let againFull = false;
let timer = null;

/** A refresh soon, coalescing a burst of events into one. */
function schedule(full = false) {
  againFull ||= full;
  if (timer) return;
  timer = setTimeout(() => {
    timer = null;
    const f = againFull;
    againFull = false;
    refresh(f);
  }, 60);
}

/** Reads the board's state and renders it; one at a time, the last request wins. */
async function refresh(full = false) {
  if (running) {
    again = true;
    againFull ||= full;
    return running;
  }
  running = (async () => {
    try {
      await load(full);
      render();
    } catch (err) {
      if (err.status === 401) signOut();
      else toast(`Could not refresh: ${err.message}`, true);
    }
  })();
  await running;
  running = null;
  if (again) {
    again = false;
    const f = againFull;
    againFull = false;
    await refresh(f);
  }
}

async function load(full) {
  const api = state.api;
  const withDistribution = full || Date.now() - state.distributionAt > DISTRIBUTION_EVERY;
  const [operators, stats, sources, queue, waiting] = await Promise.all([
    api.get("/api/operators"),
    api.get("/api/stats/operators"),
    api.get("/api/sources"),
    api.get("/api/queue?limit=1000"),
    api.get("/api/contacts?status=open&unassigned=true&limit=100"),
  ]);
  const open = await Promise.all([...state.expanded].map(async (id) =>
    [id, await api.get(`/api/contacts?status=open&operator_id=${id}&limit=100`)]));
  if (withDistribution) {
    const dists = await Promise.all(sources.map(async (s) =>
      [s.id, await api.get(`/api/sources/${s.id}/distribution`)]));
    state.distribution = new Map(dists);
    state.distributionAt = Date.now();
  }
  state.operators = operators;
  state.stats = new Map(stats.map((s) => [s.operator_id, s]));
  state.sources = sources;
  state.queue = queue;
  state.waiting = waiting;
  state.openContacts = new Map(open);
  if (queue.length > 0) {
    const q = queue[0];
    state.skew = Date.now() - Date.parse(q.oldest_since) - q.oldest_wait_seconds * 1000;
  }
}

function render() {
  renderQueue(state, actions);
  renderOperators(state, actions);
  renderSources(state, actions);
}

/** Runs a change, says how it went, and reads the state again either way. */
async function change(what, run) {
  try {
    await run();
    toast(what);
  } catch (err) {
    toast(err.message, true);
  }
  await refresh(true);
}

const actions = {
  openContact: (id) => openDrawer(state, id).catch((err) => toast(err.message, true)),
  expand: (id, open) => {
    if (open === state.expanded.has(id)) return;
    if (open) state.expanded.add(id);
    else state.expanded.delete(id);
    schedule();
  },
  patchOperator: (id, body) => change("Operator saved", () => state.api.patch(`/api/operators/${id}`, body)),
  patchSource: (id, body) => change("Source saved", () => state.api.patch(`/api/sources/${id}`, body)),
  assign: (id, operatorId) =>
    change(`Contact #${id} assigned`, () => state.api.post(`/api/contacts/${id}/assign`, { operator_id: operatorId })),
  close: (id) => change(`Contact #${id} closed`, () => state.api.post(`/api/contacts/${id}/close`)),
  unassign: (id) => change(`Contact #${id} back in the queue`, () => state.api.post(`/api/contacts/${id}/unassign`)),
  draftWeight: (sourceId, operatorId, value) => {
    if (!state.drafts.has(sourceId)) state.drafts.set(sourceId, new Map());
    state.drafts.get(sourceId).set(operatorId, value);
    state.previews.delete(sourceId);
    const apply = $(`apply-${sourceId}`);
    if (apply) apply.disabled = !state.canWrite;
  },
  discard: (sourceId) => {
    state.drafts.delete(sourceId);
    state.previews.delete(sourceId);
    render();
  },
  preview: async (sourceId) => {
    try {
      const result = await state.api.post(`/api/sources/${sourceId}/simulate`, { operators: proposed(sourceId) });
      state.previews.set(sourceId, result);
      render();
    } catch (err) {
      toast(err.message, true);
    }
  },
  apply: (sourceId) => change("Weights applied", async () => {
    await state.api.put(`/api/sources/${sourceId}/operators`, { operators: proposed(sourceId) });
    state.drafts.delete(sourceId);
    state.previews.delete(sourceId);
  }),
};

/** The weights the editor shows for a source: the draft over the current ones, zeros left out. */
function proposed(sourceId) {
  const source = state.sources.find((s) => s.id === sourceId);
  const weights = new Map((source ? source.operators : []).map((w) => [w.operator_id, String(w.weight)]));
  for (const [id, value] of state.drafts.get(sourceId) || []) weights.set(id, value);
  return [...weights]
    .map(([operatorId, value]) => ({ operator_id: operatorId, weight: Number(value) }))
    .filter((w) => w.weight > 0);
}

boot();
