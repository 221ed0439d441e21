/**
 * charts.js — uPlot time-series charts: sparklines for the fleet, larger charts with axes.
 *
 * uPlot is vendored at build time into /static/vendor/ (scripts/vendor-frontend.sh) and loaded
 * as a classic script before the page modules; when it is missing the charts say so in text
 * and the rest of the page works. Data are uPlot's aligned arrays: [t (unix s), y1, y2, …],
 * null for gaps.
 */

const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function available(container) {
  if (typeof window.uPlot === "function") return true;
  container.textContent = "charts unavailable: the vendored uPlot is missing (run make vendor)";
  return false;
}

function width(container, fallback) {
  const style = window.getComputedStyle(container);
  const padding = parseFloat(style.paddingLeft || "0") + parseFloat(style.paddingRight || "0");
  return Math.max(120, Math.floor((container.clientWidth || fallback) - padding));
}

/** y from 0 (every figure charted here is ≥ 0) to at least `floor`, so a flat zero reads as zero. */
function fromZero(floor) {
  return (u, min, max) => [0, Math.max(max == null ? floor : max * 1.05, floor)];
}

/** A small line with no axes, legend or cursor; `chart.setData([t, y])` updates it. */
export function sparkline(container, label, data) {
  if (!available(container)) return null;
  container.setAttribute("role", "img");
  container.setAttribute("aria-label", label);
  return new window.uPlot(
    {
      width: width(container, 140),
      height: 32,
      pxAlign: false,
      cursor: { show: false },
      select: { show: false },
      legend: { show: false },
      scales: { x: { time: true }, y: { range: fromZero(1e-9) } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: COLOURS[0], width: 1.25, spanGaps: false }],
    },
    data,
    container,
  );
}

/**
 * A chart with a time axis, a y axis and a legend. `series` = [{label, format?}], `data` =
 * [t, ys…]. Returns the uPlot instance (`setData` to update) or null without uPlot.
 */
export function timeChart(container, title, series, data, options = {}) {
  if (!available(container)) return null;
  container.setAttribute("role", "img");
  container.setAttribute("aria-label", `${title}: ${series.map((s) => s.label).join(", ")}`);
  const chart = new window.uPlot(
    {
      title,
      width: width(container, 560),
      height: options.height || 220,
      scales: { x: { time: options.time !== false }, y: { range: fromZero(options.floor ?? 1) } },
      axes: [{}, { size: 70, values: options.axisFormat ? (u, ticks) => ticks.map(options.axisFormat) : undefined }],
      series: [
        { label: options.time === false ? "s" : "time" },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.colour || COLOURS[i % COLOURS.length],
          width: 1.5,
          value: s.format ? (u, v) => (v == null ? "–" : s.format(v)) : undefined,
        })),
      ],
    },
    data,
    container,
  );
  return chart;
}

/** Keep the last `seconds` of aligned arrays after appending one point (t, ys…). */
export function appendPoint(data, t, values, seconds = 3600) {
  if (!data || !data.length) return data;
  if (data[0].length && t <= data[0][data[0].length - 1]) return data; // not newer
  data[0].push(t);
  values.forEach((v, i) => data[i + 1].push(v == null ? null : v));
  const cutoff = t - seconds;
  let drop = 0;
  while (drop < data[0].length && data[0][drop] < cutoff) drop += 1;
  if (drop) data.forEach((column) => column.splice(0, drop));
  return data;
}
