/**
 * main.js — every console page's entry: the live feed, the header's status, the activity
 * list, sign-out, then the page's own module (named by `<body data-page>`).
 *
 * Pages read what they need from `<body data-*>` (role, service name, incident id); buttons
 * that change state are rendered only for operators (the server refuses viewers anyway).
 * `window.crisisctlLive` exposes the feed's state for people debugging and for the browser tests.
 */

import { LiveFeed } from "./live.js";
import { del, toLogin } from "./api.js";
import { el, when } from "./format.js";

const PAGES = {
  fleet: () => import("./fleet.js"),
  service: () => import("./service.js"),
  incidents: () => import("./incidents.js"),
  incident: () => import("./incident.js"),
  alerts: () => import("./alerts.js"),
  report: () => import("./report.js"),
};
const ACTIVITY_MAX = 40;

function describe(event) {
  const d = event.data || {};
  switch (event.type) {
    case "timeline": {
      const entry = d.entry || {};
      const who = entry.author ? ` (${entry.author})` : "";
      // a mode switch or triage on a service with no open incident is published, not stored
      const where = d.incident_id == null ? d.service || "no incident" : `incident #${d.incident_id}`;
      return `${where}: ${entry.kind || "entry"} — ${entry.text || ""}${who}`;
    }
    case "incident":
      return `incident #${d.id ?? "?"} ${d.title ? `“${d.title}” ` : ""}${d.status || "changed"}`;
    case "alert":
      return `alert ${d.state || ""}: ${d.rule || d.name || (d.labels && d.labels.alertname) || "?"}${d.service ? ` on ${d.service}` : ""}`;
    case "reset":
      return "the server's event history restarted: figures reloaded";
    default:
      return event.type;
  }
}

function showStatus(snapshot) {
  const status = document.getElementById("live-status");
  if (!status) return;
  let text;
  if (snapshot.role === "leader" && snapshot.mode === "sse") {
    text = snapshot.state === "open" ? "live" : `live: ${snapshot.state}`;
  } else if (snapshot.role === "leader" && snapshot.mode === "poll") {
    text = snapshot.paused ? "polling (paused while hidden)" : "polling";
  } else if (snapshot.role === "leader") {
    text = "connecting";
  } else {
    text = snapshot.mode === "shared" ? `live via another tab (${snapshot.state})` : "waiting for the live feed";
  }
  status.textContent = text;
  status.dataset.role = snapshot.role;
  status.dataset.mode = snapshot.mode;
}

/** When the event happened, as far as its data says (else now: when it arrived). */
function happened(event) {
  const d = event.data || {};
  const at = (d.entry && d.entry.at) || d.fired_at || d.resolved_at || d.updated_at;
  return at && !Number.isNaN(Date.parse(at)) ? new Date(at).toISOString() : new Date().toISOString();
}

function activity(event) {
  const list = document.getElementById("activity");
  if (!list || event.type === "fleet" || event.type === "hello") return;
  const at = happened(event);
  const item = el(
    "li",
    { "data-type": event.type, "data-event-id": event.id || "" },
    el("time", { datetime: at }, when(at).slice(11, 19)),
    " ",
    describe(event),
  );
  list.prepend(item);
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild.remove();
}

async function main() {
  const body = document.body;
  const context = {
    page: body.dataset.page,
    role: body.dataset.role,
    user: body.dataset.user,
    canChange: body.dataset.role === "operator",
    data: { ...body.dataset },
  };
  const signOut = document.getElementById("sign-out");
  if (signOut) {
    signOut.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await del("/api/session");
      } finally {
        window.location.assign("/login");
      }
    });
  }
  // window.crisisctlLiveOptions (set by a debugging session or a browser test before the page's
  // scripts run) may shorten the feed's timings, e.g. {stallMs: 1500}
  const overrides = typeof window.crisisctlLiveOptions === "object" ? window.crisisctlLiveOptions : {};
  const feed = new LiveFeed({ ...overrides, onStatus: showStatus, onUnauthorized: toLogin });
  window.crisisctlLive = feed;
  feed.on("*", activity);
  const load = PAGES[context.page];
  if (load) {
    const module = await load();
    module.init(context, feed); // registers its listeners, then loads its snapshot
  }
  // buttons are rendered disabled: a click before their handlers exist would submit natively
  for (const button of document.querySelectorAll("[data-needs-js]")) button.disabled = false;
  feed.start();
}

main().catch((error) => {
  console.error("crisisctl console failed to start", error);
  const region = document.getElementById("page-message");
  if (region) region.textContent = `The page failed to start: ${error.message}. Reload it.`;
});
