/**
 * report.js — a load or validation report stored on an incident, with its charts.
 *
 * Reads /api/incidents/{id}/reports/{report_id}: `{id, kind, title, at, author, report}` where
 * `report` is incidents.reports' summary of what was attached (load: latency_ms, series
 * [{t_s, p50_ms, p95_ms, p99_ms, rps, errors}]; validate: checks, success and required rates;
 * triage: severity, reasons, latency).
 */

import { getJSON } from "./api.js";
import { timeChart } from "./charts.js";
import { el, ms, num, pct, rps, say, severityBadge, when } from "./format.js";

function facts(pairs) {
  return pairs.filter(([, v]) => v != null).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]);
}

function load(details, box) {
  const latency = details.latency_ms || {};
  box.facts.replaceChildren(
    ...facts([
      ["Label", details.label],
      ["URL", details.url],
      ["Measured at", when(details.measured_at)],
      ["Model", details.model],
      ["Duration", details.duration_s == null ? null : `${num(details.duration_s, 1)} s`],
      ["Requests", details.requests == null ? null : String(details.requests)],
      ["Throughput", rps(details.requests_per_second)],
      ["Errors", pct(details.error_rate)],
      ["p50 / p95 / p99", `${ms(latency.p50)} / ${ms(latency.p95)} / ${ms(latency.p99)}`],
    ]),
  );
  const series = Array.isArray(details.series) ? details.series : [];
  if (!series.length) {
    box.charts.append(el("p", { class: "muted" }, "This report holds no per-second series to chart."));
    return;
  }
  const t = series.map((p) => p.t_s);
  const col = (key) => series.map((p) => (p[key] == null ? null : p[key]));
  const a = el("div", { class: "chart", id: "report-latency" });
  const b = el("div", { class: "chart", id: "report-throughput" });
  box.charts.append(a, b);
  const opts = { time: false };
  timeChart(a, "Latency per second", [
    { label: "p50", format: ms }, { label: "p95", format: ms }, { label: "p99", format: ms },
  ], [t, col("p50_ms"), col("p95_ms"), col("p99_ms")], { ...opts, axisFormat: ms });
  timeChart(b, "Requests and errors per second", [
    { label: "req/s", format: rps }, { label: "errors", format: (v) => num(v, 0) },
  ], [t, col("rps"), col("errors")], opts);
}

function triage(details, box) {
  const latency = details.latency_ms || {};
  box.facts.replaceChildren(
    ...facts([
      ["URL", details.url],
      ["Measured at", when(details.measured_at)],
      ["Severity", severityBadge(details.severity)],
      ["Degradation", details.degradation_factor == null ? null : `${num(details.degradation_factor, 3)}× the reference`],
      ["Available", details.available == null ? null : details.available ? "yes" : "no"],
      ["Errors", pct(details.error_rate)],
      ["p50 / p95 / p99", `${ms(latency.p50)} / ${ms(latency.p95)} / ${ms(latency.p99)}`],
      ["Samples", details.samples == null ? null : String(details.samples)],
    ]),
  );
  const reasons = Array.isArray(details.reasons) ? details.reasons : [];
  box.charts.append(el("h2", {}, "Reasons"), el("ul", {}, reasons.map((r) => el("li", {}, String(r)))));
}

function validation(details, box) {
  box.facts.replaceChildren(
    ...facts([
      ["URL", details.url],
      ["Measured at", when(details.measured_at)],
      ["Verdict", details.passed == null ? "no verdict" : details.passed ? "passed" : "failed"],
      ["Success rate", pct(details.success_rate, 1)],
      ["Required", pct(details.required_rate, 1)],
    ]),
  );
  const checks = Array.isArray(details.checks) ? details.checks : [];
  box.charts.append(
    el(
      "table",
      {},
      el("caption", {}, "Checks"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "check"), el("th", { scope: "col" }, "result"))),
      el(
        "tbody",
        {},
        checks.map((c) =>
          el("tr", {}, el("td", {}, c.name), el("td", { class: c.skipped ? "muted" : c.passed ? "ok" : "bad" }, c.skipped ? "skipped" : c.passed ? "passed" : "failed")),
        ),
      ),
    ),
  );
}

export async function init(context) {
  const id = context.data.incident;
  const reportId = context.data.report;
  const message = document.getElementById("page-message");
  const box = { facts: document.getElementById("report-facts"), charts: document.getElementById("report-charts") };
  try {
    const report = await getJSON(`/api/incidents/${encodeURIComponent(id)}/reports/${encodeURIComponent(reportId)}`);
    const details = report.report || report.details || {};
    document.getElementById("report-title").textContent = report.title || `report ${reportId}`;
    const kind = report.kind || details.report || "";
    if (kind === "validate") validation(details, box);
    else if (kind === "triage") triage(details, box);
    else load(details, box);
  } catch (error) {
    say(message, `The report could not be loaded: ${error.message}`, "error");
  }
}
