// The contact drawer: the contact, its lead, and its decision history told for a person
// ("5 candidates, 2 at capacity, 1 inactive; drew 17 of 40 → Anna"), with each
// candidate's weight and load at that moment.

import { fill, h, when } from "./dom.js";
import { label, sourceNames } from "./views.js";

const PATHS = {
  registered: "Registered",
  queued: "Queued",
  drained: "Drained from the queue",
  manual: "Assigned by hand",
  unassigned: "Unassigned",
};

/** The control that opened the drawer, given the focus back when it closes. */
let opener = null;
/** Counts the drawer's reads: only the latest is shown. */
let reads = 0;

/** Opens the drawer on contact `id`, reading it, its lead and its history. */
export async function openDrawer(state, id, from = null) {
  opener = from;
  state.drawer = id;
  document.getElementById("drawer").hidden = false;
  document.getElementById("scrim").hidden = false;
  behind(true);
  document.getElementById("drawer-title").textContent = `Contact #${id}`;
  fill("drawer-body", h("p", { class: "muted" }, "Loading…"));
  document.getElementById("drawer-close").focus();
  try {
    await refreshDrawer(state);
  } catch (err) {
    if (state.drawer === id) fill("drawer-body", h("p", { class: "error" }, `Could not read contact #${id}: ${err.message}`));
    throw err;
  }
}

export function closeDrawer(state) {
  const wasOpen = state.drawer !== null;
  state.drawer = null;
  reads += 1;
  document.getElementById("drawer").hidden = true;
  document.getElementById("scrim").hidden = true;
  behind(false);
  // The opener itself, or the control that took its place in a refresh meanwhile.
  const key = opener && opener.dataset.key;
  const back = opener && opener.isConnected ? opener
    : key && document.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (wasOpen && back) back.focus({ preventScroll: true });
  opener = null;
}

/** Makes the page behind the drawer inert while it is open: focus and clicks stay in the
 * drawer, as in a modal dialog. */
function behind(inert) {
  for (const el of document.querySelectorAll("header.top, #board")) el.inert = inert;
}

/** Reads the open drawer's contact again (a live event touched it). */
export async function refreshDrawer(state) {
  const id = state.drawer;
  if (id === null) return;
  reads += 1;
  const mine = reads;
  const [contact, decisions] = await Promise.all([
    state.api.get(`/api/contacts/${id}`),
    state.api.get(`/api/contacts/${id}/decisions`),
  ]);
  const lead = await state.api.get(`/api/leads/${contact.lead_id}`);
  if (state.drawer !== id || mine !== reads) return;
  const names = operatorNames(state);
  const sources = sourceNames(state);
  const operator = contact.operator ? contact.operator.name : "nobody (waiting)";
  fill("drawer-body",
    h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", { id: "drawer-status" }, contact.status),
      h("dt", {}, "Operator"), h("dd", { id: "drawer-operator" }, operator),
      h("dt", {}, "Source"), h("dd", {}, sources.get(contact.source_id) || `#${contact.source_id}`),
      h("dt", {}, "Arrived"), h("dd", {}, when(contact.created_at)),
      contact.closed_at ? [h("dt", {}, "Closed"), h("dd", {}, when(contact.closed_at))] : null),
    h("h3", {}, "Payload"),
    h("pre", { class: "payload" }, JSON.stringify(contact.payload, null, 2)),
    h("h3", {}, "Lead"),
    h("p", {}, h("b", {}, lead.external_id), h("span", { class: "muted" },
      ` · ${lead.contacts.length} contact${lead.contacts.length === 1 ? "" : "s"}, first on ${when(lead.created_at)}`)),
    h("h3", {}, "Why this operator?"),
    h("ol", { class: "decisions" }, decisions.map((d) => decision(d, names))));
}

function decision(entry, names) {
  const who = (id) => (id === null || id === undefined ? "nobody" : names.get(id) || `operator ${id}`);
  const record = entry.record;
  return h("li", { class: `decision path-${entry.path}` },
    h("div", { class: "decision-head" },
      h("b", {}, PATHS[entry.path] || entry.path), h("span", { class: "muted small" }, ` · ${when(entry.at)}`)),
    h("p", { class: "decision-line" }, record ? tell(record, entry, who) : plain(entry, who)),
    record && record.candidates && record.candidates.length ? h("table", { class: "candidates" },
      h("thead", {}, h("tr", {}, h("th", {}, "Candidate"), h("th", { class: "num" }, "Weight"),
        h("th", { class: "num" }, "Load"), h("th", {}, "At that moment"))),
      h("tbody", {}, record.candidates.map((c) => h("tr", { class: c.id === record.chosen ? "chosen" : "" },
        h("td", {}, who(c.id)), h("td", { class: "num" }, String(c.w)),
        h("td", { class: "num" }, `${c.load} / ${c.max}`),
        h("td", {}, c.id === record.chosen ? "chosen" : c.out ? label(c.out) : "eligible"))))) : null);
}

/** An entry without a record (by hand, unassigned, or history from before records). */
function plain(entry, who) {
  if (entry.path === "manual") return `Assigned by hand → ${who(entry.operator_id)}`;
  if (entry.path === "unassigned") return `Taken from ${who(entry.operator_id)}, back in the queue`;
  return entry.summary;
}

/** A recorded decision in one sentence, with names. */
export function tell(record, entry, who) {
  const candidates = record.candidates || [];
  const parts = [`${candidates.length} candidate${candidates.length === 1 ? "" : "s"}`];
  for (const reason of ["at_capacity", "inactive", "rate_limited", "zero_weight", "unassigned_from"]) {
    const n = candidates.filter((c) => c.out === reason).length;
    if (n > 0) parts.push(`${n} ${label(reason)}`);
  }
  let line = parts.join(", ");
  if (record.sticky_fallback) line += `; owner ${who(record.sticky_fallback.owner)} passed over (${label(record.sticky_fallback.skipped)})`;
  if (record.chosen !== null && record.chosen !== undefined) {
    if (record.sticky) line += `; back to its owner → ${who(record.chosen)}`;
    else if (record.credit) line += `; smooth round robin → ${who(record.chosen)}`;
    else if (record.draw !== null && record.draw !== undefined) line += `; drew ${record.draw + 1} of ${record.total} → ${who(record.chosen)}`;
    else line += ` → ${who(record.chosen)}`;
  } else if (entry.path === "queued" && candidates.some((c) => !c.out)) {
    line += `; queued behind ${record.ahead ?? "older"} older contact${record.ahead === 1 ? "" : "s"} of its source`;
  } else {
    line += "; nobody could take it, it waits";
  }
  return line;
}

function operatorNames(state) {
  return new Map(state.operators.map((o) => [o.id, o.name]));
}
