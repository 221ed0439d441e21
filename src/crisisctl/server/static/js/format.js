/**
 * format.js — figures as people read them (ms, %, req/s, bytes, times) and small DOM helpers.
 *
 * Pages build every element with `el()` and `textContent`, never from HTML strings, so text
 * that came from the server (incident titles, notes) cannot inject markup.
 */

const dash = "–";

export function ms(value) {
  if (value == null || Number.isNaN(value)) return dash;
  if (value >= 10000) return `${(value / 1000).toFixed(1)} s`;
  if (value >= 100) return `${Math.round(value)} ms`;
  if (value >= 10) return `${value.toFixed(1)} ms`;
  return `${value.toFixed(2)} ms`;
}

export function pct(fraction, digits = 2) {
  if (fraction == null || Number.isNaN(fraction)) return dash;
  return `${(fraction * 100).toFixed(digits)} %`;
}

export function rps(value) {
  if (value == null || Number.isNaN(value)) return dash;
  return value >= 100 ? `${Math.round(value)}/s` : `${value.toFixed(1)}/s`;
}

export function num(value, digits = 2) {
  if (value == null || Number.isNaN(value)) return dash;
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function bytes(value) {
  if (value == null || Number.isNaN(value)) return dash;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = value;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function duration(msValue) {
  if (msValue == null) return dash;
  let s = Math.round(msValue / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

export function when(iso) {
  if (!iso) return dash;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

/** An element with attributes (`class`, `data-*`, aria-*, …) and children (strings or nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A severity badge: OK / P3 … P0, coloured by class, with the word for screen readers. */
export function severityBadge(severity) {
  const label = severity || "?";
  return el("span", { class: `badge sev-${label.toLowerCase()}`, title: `severity ${label}` }, label);
}

export function modeBadge(mode) {
  return el("span", { class: `badge mode-${String(mode || "unknown").toLowerCase()}` }, mode || "unknown");
}

/** Show a one-sentence message in a status region (role=status or role=alert). */
export function say(region, message, kind = "info") {
  if (!region) return;
  region.textContent = message;
  region.dataset.kind = kind;
}

/**
 * `fn(latest)` at most once per `ms`, with the latest value given in between: a burst of
 * events (a replay after a reconnect brings up to the server's whole buffer) renders once.
 */
export function coalesce(fn, ms = 100) {
  let timer = null;
  let latest;
  return (value) => {
    latest = value;
    if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        fn(latest);
      }, ms);
    }
  };
}
