/**
 * service.js — one service: its figures now, an hour of charts, and (operators) the buttons to
 * switch its guard mode with a reason and to run a triage.
 *
 * Charts are seeded from /api/services/{name}/series?window=3600 and extended by each `fleet`
 * event. A mode switch goes to every instance through the server (which writes the incident
 * timeline with the signed-in name); the instances' modes update from the next fleet event.
 */

import { getJSON, post } from "./api.js";
import { appendPoint, timeChart } from "./charts.js";
import { bytes, coalesce, el, ms, modeBadge, num, pct, rps, say, severityBadge, when } from "./format.js";

const CHARTS = [
  { id: "chart-requests", title: "Requests", keys: ["rate_rps", "shed_rps"], labels: ["req/s", "shed/s"], format: rps },
  { id: "chart-latency", title: "Latency percentiles", keys: ["p50_ms", "p95_ms", "p99_ms"], labels: ["p50", "p95", "p99"], format: ms },
  { id: "chart-concurrency", title: "Concurrency limit vs in flight", keys: ["limit", "in_flight"], labels: ["limit", "in flight"], format: (v) => num(v, 0) },
  { id: "chart-errors", title: "Error ratio", keys: ["error_ratio"], labels: ["errors"], format: (v) => pct(v), floor: 0.01 },
  { id: "chart-rss", title: "Memory (RSS)", keys: ["rss_bytes"], labels: ["RSS"], format: bytes },
];

function fromFleet(service) {
  const sum = (key) => {
    const values = (service.instances || []).map((i) => i[key]).filter((v) => typeof v === "number");
    return values.length ? values.reduce((a, b) => a + b, 0) : null;
  };
  const shedTotal = Object.values(service.shed || {}).reduce((a, b) => a + (b || 0), 0);
  return {
    rate_rps: service.rate_rps, shed_rps: shedTotal, p50_ms: service.p50_ms, p95_ms: service.p95_ms,
    p99_ms: service.p99_ms, limit: sum("limit"), in_flight: sum("in_flight"),
    error_ratio: service.error_ratio, rss_bytes: service.rss_bytes,
  };
}

export function init(context, feed) {
  const name = context.data.service;
  const message = document.getElementById("page-message");
  const charts = [];

  function renderNow(service) {
    const now = document.getElementById("service-now");
    document.getElementById("service-severity").replaceChildren(severityBadge(service.severity));
    now.dataset.value = JSON.stringify(service);
    const shed = Object.entries(service.shed || {}).map(([r, v]) => `${r} ${rps(v)}`).join(", ") || "none";
    const budget = Object.entries(service.budget_left || {}).map(([slo, v]) => `${slo} ${pct(v, 1)}`).join(", ") || "no SLO";
    const pairs = [
      ["Requests", rps(service.rate_rps)], ["Errors", pct(service.error_ratio)],
      ["p50 / p95 / p99", `${ms(service.p50_ms)} / ${ms(service.p95_ms)} / ${ms(service.p99_ms)}`],
      ["Shed", shed], ["Budget left", budget], ["RSS", bytes(service.rss_bytes)],
    ];
    now.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const tbody = document.getElementById("instance-rows");
    tbody.replaceChildren(
      ...(service.instances || []).map((i) =>
        el(
          "tr",
          { "data-mode": i.mode || "" },
          el("td", {}, i.url_redacted || "?"),
          el("td", {}, i.up ? "up" : el("span", { class: "badge down" }, "down")),
          el("td", { "data-field": "mode" }, modeBadge(i.mode)),
          el("td", {}, num(i.limit, 0)),
          el("td", {}, num(i.in_flight, 0)),
        ),
      ),
    );
  }

  async function loadSeries() {
    let series = { t: [] };
    try {
      series = await getJSON(`/api/services/${encodeURIComponent(name)}/series?window=3600`);
    } catch (error) {
      say(message, `The history could not be loaded: ${error.message}`, "error");
    }
    for (const spec of CHARTS) {
      const box = document.getElementById(spec.id);
      const data = [series.t || [], ...spec.keys.map((k) => series[k] || (series.t || []).map(() => null))];
      if (spec.chart) {
        spec.data = data;
        spec.chart.setData(data);
        continue;
      }
      spec.data = data;
      spec.chart = timeChart(box, spec.title, spec.labels.map((label) => ({ label, format: spec.format })), data, {
        axisFormat: spec.format,
        floor: spec.floor ?? 1,
      });
      charts.push(spec);
    }
  }

  let latest = null;
  const redraw = coalesce(() => {
    if (latest) renderNow(latest);
    for (const spec of charts) spec.chart?.setData(spec.data);
  });

  function onFleet(fleet) {
    const service = (fleet.services || []).find((s) => s.name === name);
    if (!service) return;
    latest = service;
    const t = fleet.generated_at ? Date.parse(fleet.generated_at) / 1000 : Date.now() / 1000;
    const point = fromFleet(service);
    for (const spec of charts) appendPoint(spec.data, t, spec.keys.map((k) => point[k]));
    redraw(); // a burst of events (a replay) draws once
  }

  async function load() {
    try {
      const fleet = await getJSON("/api/fleet");
      const service = (fleet.services || []).find((s) => s.name === name);
      if (!service) {
        say(message, `No watched service is named ${name}: the fleet page lists them.`, "error");
        return;
      }
      renderNow(service);
    } catch (error) {
      say(message, `The service could not be loaded: ${error.message}`, "error");
    }
    await loadSeries();
  }

  const modeForm = document.getElementById("mode-form");
  if (modeForm && context.canChange) {
    modeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = document.getElementById("mode-result");
      const data = new FormData(modeForm);
      const button = modeForm.querySelector("button");
      button.disabled = true;
      say(out, "Switching…");
      try {
        const answer = await post(`/api/services/${encodeURIComponent(name)}/mode`, {
          mode: data.get("mode"),
          reason: String(data.get("reason") || "").trim(),
        });
        say(out, `Switched to ${data.get("mode")}${answer && answer.instances ? ` on ${answer.instances.length} instance(s)` : ""}.`, "ok");
      } catch (error) {
        say(out, error.message, "error");
      } finally {
        button.disabled = false;
      }
    });
  }

  const triage = document.getElementById("triage-button");
  if (triage && context.canChange) {
    triage.addEventListener("click", async () => {
      const out = document.getElementById("triage-result");
      triage.disabled = true;
      out.replaceChildren("Running triage…");
      try {
        const verdict = await post(`/api/services/${encodeURIComponent(name)}/triage`);
        out.dataset.severity = verdict.severity || "";
        out.replaceChildren(
          el("p", {}, "Verdict: ", severityBadge(verdict.severity), ` at ${when(new Date().toISOString())}`),
          el("ul", {}, (verdict.reasons || []).map((r) => el("li", {}, typeof r === "string" ? r : JSON.stringify(r)))),
        );
      } catch (error) {
        out.replaceChildren(el("p", { role: "alert" }, error.message));
      } finally {
        triage.disabled = false;
      }
    });
  }

  feed.on("fleet", (event) => onFleet(event.data || {}));
  feed.on("reset", load);
  load();
}
