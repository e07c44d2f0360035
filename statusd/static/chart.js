/* Equity curves as hand-written SVG (no library, no CDN: the page must work offline).
 *
 * equityCurves(result) finds run_backtest's per-symbol curves
 * (result.symbols[SYMBOL].equity_curve = [[timestamp, equity], ...]);
 * drawEquity(element, curves) draws one path per symbol on shared axes.
 * Long curves are thinned to about one point per horizontal pixel, keeping
 * each bucket's extreme values so drawdowns stay visible.
 */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 760, height: 300, left: 70, right: 16, top: 14, bottom: 34 };
const COLORS = ["#0b62c4", "#c4321b", "#18794e", "#8a6d00", "#6b3fa0", "#0f7c8c"];
const MAX_SERIES = 12;

function equityCurves(result) {
  if (!result || typeof result !== "object" || !result.symbols) return [];
  const curves = [];
  for (const [symbol, metrics] of Object.entries(result.symbols)) {
    const curve = metrics && metrics.equity_curve;
    if (!Array.isArray(curve) || curve.length < 2) continue;
    const points = curve.filter((p) => Array.isArray(p) && Number.isFinite(p[1]));
    if (points.length >= 2) curves.push({ symbol, points });
    if (curves.length >= MAX_SERIES) break;
  }
  return curves;
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

function thin(points, buckets) {
  if (points.length <= buckets * 2) return points.map((p, i) => [i, p[1]]);
  const out = [];
  const size = points.length / buckets;
  for (let b = 0; b < buckets; b++) {
    const start = Math.floor(b * size);
    const end = Math.min(points.length, Math.floor((b + 1) * size));
    let lo = start, hi = start;
    for (let i = start; i < end; i++) {
      if (points[i][1] < points[lo][1]) lo = i;
      if (points[i][1] > points[hi][1]) hi = i;
    }
    for (const i of lo <= hi ? [lo, hi] : [hi, lo]) out.push([i, points[i][1]]);
  }
  return out;
}

function formatMoney(value) {
  return value.toLocaleString(undefined, { maximumFractionDigits: 0 });
}

function drawEquity(container, curves) {
  container.replaceChildren();
  if (!curves.length) return false;
  const c = CHART;
  const plotW = c.width - c.left - c.right;
  const plotH = c.height - c.top - c.bottom;
  const series = curves.map((curve) => ({ ...curve, thin: thin(curve.points, plotW) }));
  const length = Math.max(...curves.map((curve) => curve.points.length));
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const [, v] of s.thin) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (i) => c.left + (i / Math.max(1, length - 1)) * plotW;
  const y = (v) => c.top + (1 - (v - lo) / (hi - lo)) * plotH;

  const svg = svgEl("svg", { viewBox: `0 0 ${c.width} ${c.height}`, width: c.width,
                             height: c.height, role: "img", "aria-label": "equity curve" });
  svg.appendChild(svgEl("line", { class: "axis", x1: c.left, y1: c.top + plotH,
                                  x2: c.left + plotW, y2: c.top + plotH }));
  svg.appendChild(svgEl("line", { class: "axis", x1: c.left, y1: c.top, x2: c.left,
                                  y2: c.top + plotH }));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.appendChild(svgEl("text", { x: c.left - 6, y: y(v) + 4, "text-anchor": "end" },
                          formatMoney(v)));
  }
  const first = curves[0].points[0][0];
  const last = curves[0].points[curves[0].points.length - 1][0];
  svg.appendChild(svgEl("text", { x: c.left, y: c.height - 10 }, String(first).slice(0, 10)));
  svg.appendChild(svgEl("text", { x: c.left + plotW, y: c.height - 10, "text-anchor": "end" },
                        String(last).slice(0, 10)));
  series.forEach((s, n) => {
    const d = s.thin.map(([i, v], k) => `${k ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    svg.appendChild(svgEl("path", { class: "equity", "data-symbol": s.symbol, d: d.join(""),
                                    fill: "none", stroke: COLORS[n % COLORS.length],
                                    "stroke-width": 1.5 }));
  });
  const legend = svgEl("g", { class: "legend" });
  series.forEach((s, n) => {
    legend.appendChild(svgEl("text", { x: c.left + 8 + n * 90, y: c.top + 12,
                                       fill: COLORS[n % COLORS.length] }, s.symbol));
  });
  svg.appendChild(legend);
  container.appendChild(svg);
  return true;
}
