/**
 * incident.js — one incident: its state, MTTx, escalation, action items, reports and a timeline
 * that grows live (`timeline` events for this id), with the operators' buttons: acknowledge,
 * note, status, escalate, resolve. Every change goes through the API, which writes the
 * timeline entry with the signed-in name; the entry then arrives here as an event.
 */

import { getJSON, post } from "./api.js";
import { duration, el, say, severityBadge, when } from "./format.js";

const MTTX = [
  ["time_to_detect_ms", "MTTD (detect)"],
  ["time_to_acknowledge_ms", "MTTA (acknowledge)"],
  ["time_to_mitigate_ms", "MTTM (mitigate)"],
  ["time_to_resolve_ms", "MTTR (resolve)"],
];

function mttxValue(incident, key) {
  const table = incident.mttx || {};
  const short = key.replace(/_ms$/, "");
  return table[key] ?? table[short] ?? incident[key] ?? null;
}

export function init(context, feed) {
  const id = Number(context.data.incident);
  const message = document.getElementById("page-message");
  const timeline = document.getElementById("timeline");
  const seen = new Set();
  let timer = null;
  let shownStatus = null;

  function entry(e) {
    if (e.id != null) {
      if (seen.has(e.id)) return null;
      seen.add(e.id);
    }
    return el(
      "li",
      { "data-entry": e.id ?? "", "data-kind": e.kind || "" },
      el("time", { datetime: e.at || "" }, when(e.at)),
      " ",
      el("span", { class: "kind" }, e.kind || "entry"),
      " ",
      el("span", { class: "text" }, e.text || ""),
      e.author ? el("span", { class: "author" }, ` — ${e.author}`) : null,
      e.source ? el("span", { class: "muted" }, ` (${e.source})`) : null,
    );
  }

  function renderHead(incident) {
    document.getElementById("incident-title").textContent = `#${incident.id} ${incident.title || ""}`;
    const facts = document.getElementById("incident-facts");
    facts.dataset.status = incident.status || "";
    facts.dataset.escalation = String(incident.escalation_level ?? "");
    const pairs = [
      ["Severity", severityBadge(incident.severity)],
      ["Status", el("span", { "data-field": "status" }, incident.status || "")],
      ["Service", incident.service || "–"],
      ["Escalation", el("span", { "data-field": "escalation" }, `level ${incident.escalation_level ?? "?"}${incident.escalation ? ` — ${incident.escalation}` : ""}`)],
      ["Started", when(incident.started_at)],
      ...MTTX.map(([key, label]) => [label, duration(mttxValue(incident, key))]),
    ];
    facts.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const select = document.getElementById("status");
    if (select && incident.status !== shownStatus) {
      shownStatus = incident.status; // follow a change, never undo the person's own choice
      if ([...select.options].some((o) => o.value === incident.status)) select.value = incident.status;
    }
    const actions = incident.action_items || [];
    document.getElementById("action-items").replaceChildren(
      ...(actions.length
        ? actions.map((a) => el("li", {}, `${a.title} (${a.kind || "action"}, ${a.priority || "–"}, ${a.status || "open"})${a.owner ? ` — ${a.owner}` : ""}${a.due_date ? `, due ${a.due_date}` : ""}`))
        : [el("li", { class: "muted" }, "none yet")]),
    );
    const reports = incident.reports || [];
    document.getElementById("reports").replaceChildren(
      ...(reports.length
        ? reports.map((r) => el("li", {}, el("a", { href: `/incidents/${id}/reports/${encodeURIComponent(r.id)}` }, r.title || `${r.kind} report ${r.id}`)))
        : [el("li", { class: "muted" }, "none attached")]),
    );
  }

  async function load() {
    try {
      const incident = await getJSON(`/api/incidents/${id}`);
      renderHead(incident);
      const entries = incident.timeline || incident.events || [];
      seen.clear();
      timeline.replaceChildren(...entries.map(entry).filter(Boolean));
    } catch (error) {
      say(message, `The incident could not be loaded: ${error.message}`, "error");
    }
  }

  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(load, 250);
  };

  feed.on("timeline", (event) => {
    const d = event.data || {};
    if (Number(d.incident_id) !== id || !d.entry) return;
    const item = entry(d.entry);
    if (item) timeline.append(item);
  });
  feed.on("incident", (event) => {
    if (Number((event.data || {}).id) === id) soon();
  });
  feed.on("reset", soon);

  if (context.canChange) {
    const out = document.getElementById("action-result");
    const act = async (path, body, done) => {
      try {
        await post(`/api/incidents/${id}/${path}`, body);
        say(out, done, "ok");
        soon(); // the figures (status, MTTx); the timeline entry comes as an event
        return true;
      } catch (error) {
        say(out, error.message, "error");
        return false;
      }
    };
    document.getElementById("ack-button").addEventListener("click", () => act("ack", {}, "Acknowledged."));
    document.getElementById("escalate-button").addEventListener("click", () => act("escalate", {}, "Escalated."));
    document.getElementById("note-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const field = event.target.elements.text;
      const text = field.value.trim();
      if (!text) return say(out, "Write the note first.", "error");
      if (await act("note", { text }, "Note added.")) field.value = "";
    });
    document.getElementById("status-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const status = event.target.elements.status.value;
      act("status", { status }, `Status set to ${status}.`);
    });
    document.getElementById("resolve-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const summary = event.target.elements.summary.value.trim();
      act("resolve", summary ? { summary } : {}, "Resolved.");
    });
  }
  load();
}
