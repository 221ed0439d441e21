/**
 * alerts.js — the firing alerts (the watch's own and Alertmanager's), refetched whenever an
 * `alert` event says one fired or resolved.
 */

import { getJSON } from "./api.js";
import { el, num, say, severityBadge, when } from "./format.js";

function alertName(a) {
  return a.rule || a.name || a.alertname || (a.labels && (a.labels.alertname || a.labels.rule)) || "alert";
}

export function init(context, feed) {
  const tbody = document.getElementById("alert-rows");
  const message = document.getElementById("page-message");
  let timer = null;

  async function load() {
    try {
      const answer = await getJSON("/api/alerts");
      const list = (Array.isArray(answer) ? answer : answer.alerts || []).filter((a) => !a.state || a.state === "firing");
      tbody.replaceChildren(
        ...list.map((a) =>
          el(
            "tr",
            { "data-alert": a.fingerprint || alertName(a) },
            el("td", {}, alertName(a)),
            el("td", {}, a.service ? el("a", { href: `/services/${encodeURIComponent(a.service)}` }, a.service) : "–"),
            el("td", {}, severityBadge(a.severity)),
            el("td", {}, when(a.fired_at || a.starts_at || a.active_since)),
            el("td", {}, a.value == null ? "–" : `${num(a.value)}${a.threshold == null ? "" : ` (bound ${num(a.threshold)})`}`),
            el("td", {}, a.summary || (a.annotations && a.annotations.summary) || ""),
            el("td", {}, a.source || (a.kind ? "watch" : "–")),
          ),
        ),
      );
      document.getElementById("alerts-empty").hidden = list.length > 0;
    } catch (error) {
      say(message, `The alerts could not be loaded: ${error.message}`, "error");
    }
  }

  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(load, 250);
  };
  feed.on("alert", soon);
  feed.on("reset", soon);
  load();
}
