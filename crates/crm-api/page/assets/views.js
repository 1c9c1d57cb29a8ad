// The board's three sections, rendered from the state `app.js` keeps. Each render
// replaces its section's content; inputs keep their focus (`fill`) and drafts live in
// the state, so a live refresh never loses what a supervisor is typing.

import { bar, duration, fill, h, percent } from "./dom.js";

/** The queue: a tile per source with waiting contacts, then the waiting contacts. */
export function renderQueue(state, act) {
  const names = sourceNames(state);
  const total = state.queue.reduce((sum, q) => sum + q.waiting, 0);
  document.getElementById("queue-total").textContent = total === 0 ? "empty" : `${total} waiting`;
  const tiles = state.queue.map((q) =>
    h("div", { class: `tile${q.stale > 0 ? " stale" : ""}`, id: `queue-source-${q.source_id}` },
      h("div", { class: "tile-name" }, names.get(q.source_id) || `source ${q.source_id}`),
      h("div", { class: "tile-count" }, String(q.waiting)),
      h("div", { class: "tile-wait" }, "oldest ",
        h("span", { class: "ticking", dataset: { since: q.oldest_since } }, ticking(state, q.oldest_since))),
      q.stale > 0 ? h("div", { class: "tile-stale" }, `${q.stale} waited too long`) : null),
  );
  fill("queue-sources", tiles.length ? tiles : h("p", { class: "empty" }, "Nobody is waiting."));
  const active = state.operators.filter((o) => o.is_active);
  const roomy = active.filter((o) => o.active_contacts < o.max_active_contacts);
  const shown = state.waiting.length;
  fill("waiting", state.waiting.map((c) => {
    const chosen = state.assignTo.get(c.id);
    return h("li", { class: "row", id: `waiting-${c.id}` },
      contactLink(c, act),
      h("span", { class: "muted small" }, names.get(c.source_id) || `source ${c.source_id}`, " · waiting ",
        h("span", { class: "ticking", dataset: { since: c.created_at } }, ticking(state, c.created_at))),
      h("span", { class: "actions" },
        h("select", { id: `assign-to-${c.id}`, dataset: { key: `assign-to-${c.id}`, hold: "1" },
          "aria-label": `Operator for contact ${c.id}`, disabled: !state.canWrite || roomy.length === 0,
          onchange: (e) => act.chooseAssignee(c.id, Number(e.target.value) || null) },
        h("option", { value: "" }, roomy.length === 0 ? "All full" : "Assign to…"),
        active.map((o) => h("option", { value: String(o.id), selected: chosen === o.id,
          disabled: o.active_contacts >= o.max_active_contacts },
        `${o.name} (${o.active_contacts}/${o.max_active_contacts})`))),
        h("button", { class: "assign", type: "button", dataset: { key: `assign-${c.id}` },
          disabled: !state.canWrite || roomy.length === 0, onclick: () => act.assign(c.id) }, "Assign")));
  }), total > shown ? h("li", { class: "more muted small" }, `The oldest ${shown} of ${total} waiting.`) : null);
}

/** Operators: active switch, load against the limit, the last hour, shares per source. */
export function renderOperators(state, act) {
  const names = sourceNames(state);
  const cards = state.operators.map((o) => {
    const stats = state.stats.get(o.id);
    const shares = [];
    for (const s of state.sources) {
      const mine = (s.operators || []).find((w) => w.operator_id === o.id);
      if (!mine) continue;
      const dist = state.distribution.get(s.id);
      const row = dist && dist.operators.find((r) => r.operator_id === o.id);
      const realised = row && dist.draws > 0 ? row.assigned / dist.draws : null;
      const expected = row && dist.draws > 0 ? row.expected / dist.draws : row && row.configured_share;
      shares.push(h("li", { class: `share${row && row.flag ? " flag" : ""}`,
        title: row && row.z !== null ? `z = ${row.z.toFixed(2)} over ${dist.draws} draws` : "too few draws to judge" },
      h("span", { class: "share-source" }, names.get(s.id)),
      h("span", {}, realised === null ? "no draws" : percent(realised)),
      h("span", { class: "muted" }, ` / ${percent(expected)} expected`),
      row && row.flag ? h("span", { class: "flag-mark", "aria-label": "off its expected share" }, " ⚑") : null));
    }
    const open = state.openContacts.get(o.id);
    return h("article", { class: `op${o.is_active ? "" : " inactive"}`, id: `op-${o.id}` },
      h("div", { class: "op-head" },
        h("label", { class: "switch", title: o.is_active ? "Active: takes contacts" : "Inactive: takes none" },
          h("input", { type: "checkbox", role: "switch", id: `active-${o.id}`, checked: o.is_active,
            dataset: { key: `active-${o.id}` }, disabled: !state.canWrite, "aria-label": `${o.name} active`,
            onchange: (e) => act.setActive(o.id, e.target.checked) }),
          h("span", { class: "knob" })),
        h("div", { class: "op-name" }, o.name, h("span", { class: "muted small" }, ` #${o.id}`)),
        h("div", { class: "op-hour", title: "assignments in the last hour" },
          h("b", {}, String(stats ? stats.assigned_last_hour : 0)), h("span", { class: "muted small" }, " last hour"))),
      h("div", { class: "op-load" },
        bar(o.active_contacts, o.max_active_contacts, `${o.name}: open contacts against the limit`),
        h("span", { class: "load-text" }, h("b", { class: "load" }, String(o.active_contacts)), " / "),
        h("input", { type: "text", inputmode: "numeric", class: "limit", id: `limit-${o.id}`,
          dataset: { key: `limit-${o.id}` }, autocomplete: "off",
          value: state.limitDrafts.has(o.id) ? state.limitDrafts.get(o.id) : String(o.max_active_contacts),
          disabled: !state.canWrite, "aria-label": `${o.name} limit`, title: "Enter saves",
          oninput: (e) => act.draftLimit(o.id, e.target.value),
          onchange: (e) => act.saveLimit(o.id, e.target) })),
      shares.length ? h("ul", { class: "shares" }, shares) : h("p", { class: "muted small" }, "No source sends to this operator."),
      h("details", { open: state.expanded.has(o.id),
        ontoggle: (e) => act.expand(o.id, e.target.open) },
      h("summary", { dataset: { key: `summary-${o.id}` } }, `Open contacts (${o.active_contacts})`),
      open === undefined ? h("p", { class: "muted small" }, "Loading…")
        : open.length === 0 ? h("p", { class: "muted small" }, "None.")
          : h("ol", { class: "rows" }, open.map((c) =>
            h("li", { class: "row", id: `contact-row-${c.id}` },
              contactLink(c, act),
              h("span", { class: "muted small" }, names.get(c.source_id) || ""),
              h("span", { class: "actions" },
                h("button", { class: "close", type: "button", disabled: !state.canWrite,
                  dataset: { key: `close-${c.id}` }, onclick: () => act.close(c.id) }, "Close"),
                h("button", { class: "unassign ghost", type: "button", disabled: !state.canWrite,
                  dataset: { key: `unassign-${c.id}` }, onclick: () => act.unassign(c.id) }, "Unassign")))),
          open && o.active_contacts > open.length
            ? h("p", { class: "more muted small" }, `The first ${open.length} of ${o.active_contacts}.`) : null)));
  });
  fill("operator-list", cards.length ? cards : h("p", { class: "empty" }, "No operators yet."));
}

/** Sources: strategy, sticky owner, and the weights editor with its dry run. */
export function renderSources(state, act) {
  const cards = state.sources.map((s) => {
    const draft = state.drafts.get(s.id);
    const current = new Map((s.operators || []).map((w) => [w.operator_id, w.weight]));
    const preview = state.previews.get(s.id);
    const simulated = new Map(preview ? preview.operators.map((p) => [p.operator_id, p]) : []);
    const changed = draft !== undefined;
    // The operators the source has, and those the draft adds; the rest can be added.
    const listed = state.operators.filter((o) => current.has(o.id) || (draft && draft.has(o.id)));
    const others = state.operators.filter((o) => !listed.includes(o));
    const rows = listed.map((o) => {
      const value = draft && draft.has(o.id) ? draft.get(o.id) : String(current.get(o.id) || 0);
      const sim = simulated.get(o.id);
      return h("tr", {},
        h("th", { scope: "row" }, o.name, o.is_active ? null : h("span", { class: "muted small" }, " (inactive)")),
        h("td", { class: "num" }, String(current.get(o.id) || 0)),
        h("td", {}, h("input", { type: "text", inputmode: "numeric", class: "weight", autocomplete: "off",
          id: `weight-${s.id}-${o.id}`, dataset: { key: `weight-${s.id}-${o.id}` }, value,
          "aria-label": `${o.name} weight for ${s.name}`,
          oninput: (e) => act.draftWeight(s.id, o.id, e.target.value) })),
        h("td", { class: "compare" }, sim ? [
          h("div", { class: "cmp" }, h("span", { class: "cmp-label" }, "now"),
            bar(sim.realised_share, 1, "share of the last day"), h("span", {}, percent(sim.realised_share))),
          h("div", { class: "cmp after" }, h("span", { class: "cmp-label" }, "after"),
            bar(sim.predicted_share, 1, "predicted share"), h("span", {}, percent(sim.predicted_share))),
          sim.would_take > 0 ? h("div", { class: "small" }, `takes ${sim.would_take} waiting`) : null,
          sim.excluded ? h("div", { class: "muted small" }, `now ${label(sim.excluded)}`) : null,
        ] : null));
    });
    return h("article", { class: "source", id: `source-${s.id}` },
      h("div", { class: "source-head" },
        h("h3", {}, s.name, h("span", { class: "muted small" }, ` ${s.code}`)),
        h("label", { class: "inline" }, "Strategy ",
          h("select", { id: `strategy-${s.id}`, dataset: { key: `strategy-${s.id}` }, disabled: !state.canWrite,
            onchange: (e) => act.patchSource(s.id, { strategy: e.target.value }) },
          [["weighted_random", "Weighted random"], ["smooth_weighted", "Smooth round robin"]].map(([v, t]) =>
            h("option", { value: v, selected: s.strategy === v }, t)))),
        h("label", { class: "inline switch-label" },
          h("span", { class: "switch" }, h("input", { type: "checkbox", role: "switch", id: `sticky-${s.id}`,
            dataset: { key: `sticky-${s.id}` }, checked: s.sticky_owner, disabled: !state.canWrite,
            onchange: (e) => act.patchSource(s.id, { sticky_owner: e.target.checked }) }), h("span", { class: "knob" })),
          " Sticky owner")),
      h("div", { class: "table-wrap" }, h("table", { class: "weights" },
        h("thead", {}, h("tr", {}, h("th", {}, "Operator"), h("th", { class: "num" }, "Now"),
          h("th", {}, "Weight"), h("th", {}, preview ? "Share: last day → predicted" : ""))),
        h("tbody", {}, rows.length ? rows
          : h("tr", {}, h("td", { colspan: "4", class: "muted" }, "No operator takes this source's contacts."))))),
      h("div", { class: "source-foot" },
        others.length ? h("select", { id: `add-${s.id}`, dataset: { key: `add-${s.id}` }, class: "add",
          "aria-label": `Add an operator to ${s.name}`,
          onchange: (e) => {
            if (e.target.value) act.draftWeight(s.id, Number(e.target.value), "1");
          } },
        h("option", { value: "" }, "Add operator…"),
        others.map((o) => h("option", { value: String(o.id) }, o.name))) : null,
        preview ? h("p", { class: "preview-result", id: `preview-result-${s.id}` },
          h("b", {}, `would assign ${preview.would_assign} waiting contact${preview.would_assign === 1 ? "" : "s"} now`),
          preview.still_waiting > 0 ? `, ${preview.still_waiting} would still wait` : "") : null,
        h("span", { class: "actions" },
          changed ? h("button", { type: "button", class: "ghost", dataset: { key: `discard-${s.id}` },
            onclick: () => act.discard(s.id) }, "Discard") : null,
          h("button", { type: "button", id: `preview-${s.id}`, dataset: { key: `preview-${s.id}` },
            onclick: () => act.preview(s.id) }, "Preview"),
          h("button", { type: "button", class: "primary", id: `apply-${s.id}`, dataset: { key: `apply-${s.id}` },
            disabled: !state.canWrite || !changed, onclick: () => act.apply(s.id) }, "Apply"))));
  });
  fill("source-list", cards.length ? cards : h("p", { class: "empty" }, "No sources yet."));
}

/** A contact's number and first words, opening its drawer. */
function contactLink(c, act) {
  return h("button", { class: "link contact-link", type: "button", dataset: { key: `link-${c.id}` },
    onclick: (e) => act.openContact(c.id, e.currentTarget) },
  h("span", { class: "cid" }, `#${c.id}`), " ", snippet(c.payload));
}

/** How long ago `since` was, on the server's clock. */
export function ticking(state, since) {
  return duration((Date.now() - state.skew - Date.parse(since)) / 1000);
}

/** Moves every ticking wait on the page on to now. */
export function tick(state) {
  for (const el of document.querySelectorAll(".ticking[data-since]")) {
    el.textContent = ticking(state, el.dataset.since);
  }
}

/** A reason a candidate was left out, as a person says it. */
export function label(exclusion) {
  return {
    at_capacity: "at capacity",
    inactive: "inactive",
    rate_limited: "rate limited",
    zero_weight: "weight 0",
    unassigned_from: "just unassigned from it",
  }[exclusion] || exclusion;
}

/** The first words of a contact's payload. */
export function snippet(payload) {
  if (payload === null || payload === undefined) return "";
  const text = typeof payload === "object"
    ? payload.text || payload.message || JSON.stringify(payload) : String(payload);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

/** Source names by id. */
export function sourceNames(state) {
  return new Map(state.sources.map((s) => [s.id, s.name]));
}
