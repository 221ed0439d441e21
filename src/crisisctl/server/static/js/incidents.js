/**
 * incidents.js — the incident list (open ones first; "all" on request), refreshed whenever an
 * `incident` event says one changed.
 */

import { getJSON } from "./api.js";
import { el, say, severityBadge, when } from "./format.js";

export function init(context, feed) {
  const tbody = document.getElementById("incident-rows");
  const filter = document.getElementById("incident-filter");
  const message = document.getElementById("page-message");
  let timer = null;

  async function load() {
    const status = filter.value;
    try {
      const answer = await getJSON(`/api/incidents?status=${encodeURIComponent(status)}`);
      const list = Array.isArray(answer) ? answer : answer.incidents || [];
      tbody.replaceChildren(
        ...list.map((i) =>
          el(
            "tr",
            { "data-incident": i.id },
            el("td", {}, el("a", { href: `/incidents/${i.id}` }, `#${i.id}`)),
            el("td", {}, el("a", { href: `/incidents/${i.id}` }, i.title || "")),
            el("td", {}, i.service || "–"),
            el("td", {}, severityBadge(i.severity)),
            el("td", { "data-field": "status" }, i.status || ""),
            el("td", {}, String(i.escalation_level ?? "–")),
            el("td", {}, when(i.started_at)),
          ),
        ),
      );
      document.getElementById("incidents-empty").hidden = list.length > 0;
    } catch (error) {
      say(message, `The incidents could not be loaded: ${error.message}`, "error");
    }
  }

  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(load, 250);
  };
  filter.addEventListener("change", load);
  feed.on("incident", soon);
  feed.on("reset", soon);
  load();
}
