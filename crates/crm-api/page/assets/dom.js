// Small DOM helpers: every element is built with `h`, so text from the API (names,
// payloads) is only ever set as text, never parsed as HTML.

/** An element: `h("button", {class: "x", onclick: f}, "text", child)`. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** What renders the board again (set by app.js): a section left as it was while a field
 * in it was being typed in is brought up to date when that field loses the focus. */
let rerender = () => {};

export function onSettled(render) {
  rerender = render;
}

/**
 * Replaces the children of the element with id `id`, except while the supervisor is typing
 * in a field inside it (its value differs from what was rendered) or has a `data-hold` list
 * open: that section stays as it is until the control loses the focus, so no keystroke, caret or half-typed value is
 * lost and nothing is saved before Enter. Otherwise a control that had the focus keeps it
 * (found again by its `data-key`), with its selection, without scrolling.
 */
export function fill(id, ...children) {
  const el = document.getElementById(id);
  const focused = el.contains(document.activeElement) ? document.activeElement : null;
  const typing = focused && "defaultValue" in focused && focused.value !== focused.defaultValue;
  // A list marked `data-hold` (choose an operator) stays open while it has the focus.
  if (focused && (typing || focused.dataset.hold === "1")) {
    if (!focused.dataset.waiting) {
      focused.dataset.waiting = "1";
      // A moment after the focus leaves, so that a click it left for (Assign) lands on
      // the button it pressed, not on one rendered in its place.
      focused.addEventListener("blur", () => setTimeout(rerender, 250), { once: true });
    }
    return el;
  }
  const key = focused && focused.dataset ? focused.dataset.key : undefined;
  const selection = focused && typeof focused.selectionStart === "number"
    ? [focused.selectionStart, focused.selectionEnd, focused.selectionDirection] : null;
  el.replaceChildren();
  append(el, children);
  if (key !== undefined) {
    const again = el.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) {
      again.focus({ preventScroll: true });
      if (selection && typeof again.setSelectionRange === "function") again.setSelectionRange(...selection);
    }
  }
  return el;
}

/** A duration in seconds as a person reads it: `42 s`, `3 min 05 s`, `2 h 07 min`. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const hours = Math.floor(s / 3600);
  if (hours < 48) return `${hours} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** A timestamp as local date and time. */
export function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** A share in percent, one decimal under 10 %. */
export function percent(share) {
  if (share === null || share === undefined || Number.isNaN(share)) return "–";
  const p = share * 100;
  return `${p < 10 && p > 0 ? p.toFixed(1) : Math.round(p)} %`;
}

/** A horizontal bar: `value` of `max`, with a class when it is full. */
export function bar(value, max, label) {
  const v = Number(value) || 0;
  const ratio = max > 0 ? Math.min(1, v / max) : 1;
  return h(
    "div",
    { class: `bar${ratio >= 1 ? " full" : ratio >= 0.8 ? " high" : ""}`, role: "meter",
      "aria-valuemin": "0", "aria-valuemax": String(max), "aria-valuenow": String(v),
      "aria-label": label },
    h("span", { style: `width:${(ratio * 100).toFixed(1)}%` }),
  );
}

let toastTimer = null;

/** A short message at the bottom of the screen; `error` colours it (and logs it). */
export function toast(message, error = false) {
  if (error) console.error(`mini-crm: ${message}`);
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("error", error);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, error ? 6000 : 2500);
}
