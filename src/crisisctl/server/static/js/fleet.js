/**
 * fleet.js — the fleet page: one row per watched service, refreshed by every `fleet` event.
 *
 * Each figure cell carries its raw value in `data-value` (the browser tests compare them with
 * /api/fleet) and a readable form as text. Sparklines show the last hour of request rate and
 * p95, seeded from /api/services/{name}/series when the row comes into view and extended by
 * the fleet events (a burst of them, as a replay brings, renders once: the latest).
 */

import { getJSON } from "./api.js";
import { appendPoint, sparkline } from "./charts.js";
import { bytes, coalesce, el, ms, modeBadge, num, pct, rps, say, severityBadge, when } from "./format.js";

const FIELDS = ["severity", "instances", "rate_rps", "error_ratio", "latency", "shed", "burn", "sparks"];

function instances(list) {
  return el(
    "ul",
    { class: "instances" },
    (list || []).map((i) =>
      el(
        "li",
        { "data-up": i.up ? "true" : "false", "data-mode": i.mode || "" },
        el("span", { class: "instance-url" }, i.url_redacted || "?"),
        " ",
        i.up ? modeBadge(i.mode) : el("span", { class: "badge down" }, "down"),
        " ",
        el("span", { class: "limit", title: "in flight / concurrency limit" }, `${num(i.in_flight, 0)} / ${num(i.limit, 0)}`),
      ),
    ),
  );
}

function shed(byReason) {
  const entries = Object.entries(byReason || {}).filter(([, v]) => v);
  if (!entries.length) return "none";
  return el("ul", { class: "plain" }, entries.map(([reason, v]) => el("li", {}, `${reason}: ${rps(v)}`)));
}

function burn(service) {
  const slos = Object.keys({ ...(service.burn_rates || {}), ...(service.budget_left || {}) });
  if (!slos.length) return "no SLO";
  return el(
    "ul",
    { class: "plain" },
    slos.map((slo) => {
      const windows = Object.entries((service.burn_rates || {})[slo] || {})
        .map(([w, x]) => `${w} ×${num(x, 2)}`)
        .join(", ");
      const left = (service.budget_left || {})[slo];
      return el("li", {}, `${slo}: ${windows || "–"}; budget left ${pct(left, 1)}`);
    }),
  );
}

function setCell(row, field, value, ...content) {
  const cell = row.querySelector(`[data-field="${field}"]`);
  cell.dataset.value = typeof value === "string" ? value : JSON.stringify(value ?? null);
  cell.replaceChildren(...content);
}

export function init(context, feed) {
  const tbody = document.getElementById("fleet-rows");
  const updated = document.getElementById("fleet-updated");
  const message = document.getElementById("page-message");
  const rows = new Map();
  const visible =
    typeof IntersectionObserver === "function"
      ? new IntersectionObserver((entries) => {
          for (const entry of entries) {
            if (!entry.isIntersecting) continue;
            visible.unobserve(entry.target);
            const tr = entry.target.closest("tr");
            if (tr && tr.spark && !tr.spark.seeding) seed(tr.dataset.service, tr.spark);
          }
        })
      : null;

  function row(service) {
    let tr = rows.get(service.name);
    if (tr) return tr;
    const href = `/services/${encodeURIComponent(service.name)}`;
    tr = el(
      "tr",
      { "data-service": service.name },
      el("th", { scope: "row" }, el("a", { href }, service.name)),
      FIELDS.map((f) => el("td", { "data-field": f })),
    );
    tbody.append(tr);
    rows.set(service.name, tr);
    const cell = tr.querySelector('[data-field="sparks"]');
    const rateBox = el("div", { class: "spark" });
    const p95Box = el("div", { class: "spark" });
    cell.append(el("span", { class: "spark-label" }, "req/s"), rateBox, el("span", { class: "spark-label" }, "p95"), p95Box);
    tr.spark = { data: [[], [], []], rate: null, p95: null, rateBox, p95Box, seeded: false };
    // an hour of history per row, fetched when the row comes into view (a fleet of hundreds
    // of services asks for the few on screen, not for all of them at once)
    if (visible) visible.observe(cell);
    else seed(service.name, tr.spark);
    return tr;
  }

  async function seed(name, spark) {
    spark.seeding = true;
    try {
      const s = await getJSON(`/api/services/${encodeURIComponent(name)}/series?window=3600`);
      const fresh = [s.t || [], s.rate_rps || [], s.p95_ms || []];
      // points that came by event while the series loaded are newer: keep them after it
      const last = fresh[0].length ? fresh[0][fresh[0].length - 1] : -Infinity;
      spark.data[0].forEach((t, i) => {
        if (t > last) {
          fresh[0].push(t);
          fresh[1].push(spark.data[1][i]);
          fresh[2].push(spark.data[2][i]);
        }
      });
      spark.data = fresh;
    } catch (error) {
      spark.rateBox.title = `no history: ${error.message}`;
    }
    spark.rate = sparkline(spark.rateBox, `${name}: requests per second, last hour`, [spark.data[0], spark.data[1]]);
    spark.p95 = sparkline(spark.p95Box, `${name}: p95 latency, last hour`, [spark.data[0], spark.data[2]]);
    spark.seeded = true;
  }

  function render(fleet) {
    if (!fleet || !Array.isArray(fleet.services)) return;
    updated.dataset.generatedAt = fleet.generated_at || "";
    updated.textContent = `Figures of ${when(fleet.generated_at)}`;
    const t = fleet.generated_at ? Date.parse(fleet.generated_at) / 1000 : Date.now() / 1000;
    const names = new Set();
    for (const service of fleet.services) {
      names.add(service.name);
      const tr = row(service);
      tr.dataset.severity = service.severity || "";
      setCell(tr, "severity", service.severity || "", severityBadge(service.severity));
      setCell(tr, "instances", service.instances || [], instances(service.instances));
      setCell(tr, "rate_rps", service.rate_rps, rps(service.rate_rps));
      setCell(tr, "error_ratio", service.error_ratio, pct(service.error_ratio));
      setCell(
        tr,
        "latency",
        { p50_ms: service.p50_ms ?? null, p95_ms: service.p95_ms ?? null, p99_ms: service.p99_ms ?? null },
        el("span", { "data-latency": "p50" }, ms(service.p50_ms)), " / ",
        el("span", { "data-latency": "p95" }, ms(service.p95_ms)), " / ",
        el("span", { "data-latency": "p99" }, ms(service.p99_ms)),
        service.rss_bytes != null ? el("div", { class: "muted" }, `RSS ${bytes(service.rss_bytes)}`) : null,
      );
      setCell(tr, "shed", service.shed || {}, shed(service.shed));
      setCell(tr, "burn", { burn_rates: service.burn_rates || {}, budget_left: service.budget_left || {} }, burn(service));
      const spark = tr.spark;
      appendPoint(spark.data, t, [service.rate_rps, service.p95_ms]);
      if (spark.seeded) {
        spark.rate?.setData([spark.data[0], spark.data[1]]);
        spark.p95?.setData([spark.data[0], spark.data[2]]);
      }
    }
    for (const [name, tr] of rows) {
      if (!names.has(name)) {
        tr.remove();
        rows.delete(name);
      }
    }
    document.getElementById("fleet-empty").hidden = fleet.services.length > 0;
  }

  async function load() {
    try {
      render(await getJSON("/api/fleet"));
    } catch (error) {
      say(message, `The fleet could not be loaded: ${error.message}`, "error");
    }
  }

  feed.on("fleet", coalesce((event) => render(event.data)));
  feed.on("reset", load);
  load();
}
