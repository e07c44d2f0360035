/* Equity curves as hand-written SVG (no library, no CDN: the page must work offline).
 *
 * equityCurves(result) finds run_backtest's per-symbol curves
 * (result.symbols[SYMBOL].equity_curve = [[timestamp, equity], ...]), the first
 * MAX_SERIES in the result's order: a result that is not a backtest's table
 * (results.js) is drawn so.  A backtest's table chooses its own (tablechart.js).
 * drawEquity(element, curves) draws one path per symbol on shared axes, as wide as the
 * element where that is narrower than CHART's; fitEquity(element) draws them again when
 * the element's width has changed.
 * The x axis is time when every timestamp parses and each curve runs forward in
 * time (a time with no offset is UTC, as run_backtest writes them), so a symbol
 * with a shorter history is drawn over the dates it covers; otherwise it is the
 * point's index; its ends are labelled with their dates, and their times when both
 * fall on one date.  Each curve is drawn in a colour of its own
 * (curve.color, or COLORS in order) and named in a legend under the plot; a pinned
 * curve (curve.pinned) is dashed and named after "pinned:".  The legend ends with
 * curves.note, or says how many were left out.  Long curves are thinned to about
 * one point per horizontal pixel, keeping each bucket's extreme values so drawdowns
 * stay visible.  A curve's times are parsed once (cached by its points array), so a
 * redraw of the same curves parses nothing.  The y axis is logarithmic (and says so)
 * when every value drawn is positive and the largest is LOG_SPAN times the smallest
 * or more: a curve that grew to 1e29 beside ones near their start cash flattened
 * those into its base line.  The image's name tells a screen reader what it draws.
 */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 760, height: 300, left: 70, right: 16, top: 14, bottom: 34 };
const MIN_WIDTH = 280;
// MAX_SERIES + MAX_PINNED colours: the first MAX_SERIES go first, pinned curves past them.
// A legend label is text (11 px) in its curve's colour, so each reaches 4.5:1 on the
// chart's white (WCAG AA for text; a curve, a graphical object, needs 3:1).  Ten fell
// short (#e07b00 was 3.0:1): darkened in their hue, and where two came out alike (a cyan
// beside the teal, two ambers) another hue taken, as far from the rest as any two were.
const COLORS = ["#0b62c4", "#c4321b", "#18794e", "#8a6d00", "#6b3fa0", "#0f7c8c",
                "#d13975", "#5a6270", "#b06100", "#28863a", "#3b3bd6", "#8c4a1a",
                "#0a7bb8", "#7a1f3d", "#617f07", "#b8008a", "#364152", "#ea0d0d",
                "#004d40", "#c50ce5", "#575d23", "#3a5798", "#9e2a2b", "#318171"];
const MAX_SERIES = 12;
const MAX_PINNED = 12;
const LEGEND = { top: 12, row: 16, column: 96 };  // under the plot's date labels
const LOG_SPAN = 100;

function equityCurves(result) {
  const curves = [];
  curves.total = 0;
  if (!result || typeof result !== "object" || !result.symbols) return curves;
  for (const [symbol, metrics] of Object.entries(result.symbols)) {
    const curve = metrics && metrics.equity_curve;
    if (!Array.isArray(curve) || curve.length < 2) continue;
    curves.total += 1;
    if (curves.length >= MAX_SERIES) continue;
    const points = curve.filter((p) => Array.isArray(p) && Number.isFinite(p[1]));
    if (points.length >= 2) curves.push({ symbol, points });
    else curves.total -= 1;
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
  // The indices of the points to draw.
  if (points.length <= buckets * 2) return points.map((p, i) => i);
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
    for (const i of lo <= hi ? [lo, hi] : [hi, lo]) out.push(i);
  }
  return out;
}

const TIMES = new WeakMap();  // a curve's points -> its times (ms), or null
// A date and time with no offset: run_backtest writes its bars' times so, in UTC
// (processor/quant/data.py).  The browser reads such text as its own local time, so in a
// zone with a clock change the times repeated or ran backwards (New York's 02:30 -> 03:00
// on 2024-03-10) and the chart fell back to an index axis.
const NAIVE_TIME = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d(?::\d\d(?:\.\d+)?)?)$/;

function parseTime(value) {
  const text = String(value);
  const naive = NAIVE_TIME.exec(text);
  return Date.parse(naive ? `${naive[1]}T${naive[2]}Z` : text);
}

function timesOf(points) {
  if (!TIMES.has(points)) {
    let times = points.map((p) => parseTime(p[0]));
    for (let i = 0; i < times.length; i++) {
      if (!Number.isFinite(times[i]) || (i && times[i] < times[i - 1])) {
        times = null;
        break;
      }
    }
    TIMES.set(points, times);
  }
  return TIMES.get(points);
}

function timeAxis(curves) {
  // Each curve's times (ms), or null when any does not parse or runs backwards.
  const all = curves.map((curve) => timesOf(curve.points));
  return all.every(Boolean) ? all : null;
}

function keepColors(previous, symbols) {
  // Each symbol's index in COLORS: the one it had while drawn before, else the first free.
  const colors = new Map();
  for (const symbol of symbols) {
    if (previous.has(symbol)) colors.set(symbol, previous.get(symbol));
  }
  const taken = new Set(colors.values());
  let free = 0;
  for (const symbol of symbols) {
    if (colors.has(symbol)) continue;
    while (taken.has(free)) free += 1;
    colors.set(symbol, free);
    taken.add(free);
  }
  return colors;
}

function legendEntries(series, curves) {
  // Its texts in order; a heading or a note starts a row, a note takes the whole row.
  const named = (s) => {
    // A name is job text: hidden characters shown as escapes (app.js), long ones cut.
    const name = typeof shown === "function" ? shown(s.symbol) : s.symbol;
    return { text: name.length > 12 ? `${name.slice(0, 11)}…` : name, series: s };
  };
  const entries = series.filter((s) => !s.pinned).map(named);
  const pinned = series.filter((s) => s.pinned);
  if (pinned.length) entries.push({ text: "pinned:", row: true }, ...pinned.map(named));
  const omitted = (curves.total || curves.length) - curves.length;
  if (curves.note) entries.push({ text: curves.note, row: true, wide: true });
  else if (omitted > 0) entries.push({ text: `${series.length} of ${curves.total} symbols` });
  return entries;
}

function placeLegend(entries, perRow) {
  // Each entry's slot in rows of perRow columns, and the number of rows.
  let slot = 0;
  const slots = entries.map((e) => {
    if (e.row && slot % perRow) slot += perRow - (slot % perRow);
    const at = slot;
    slot += e.wide ? perRow : 1;
    return at;
  });
  return { slots, rows: Math.ceil(slot / perRow) };
}

function formatMoney(value, digits = 0, compact = Math.abs(value) >= 1e6) {
  // Past a million, compact ("151.2M"): the axis's 70 px cut 151,245,126 to 51,245,126.
  // Compact notation ends at trillions ("220,000,000,000,000T" for 2.2e29, cut to
  // "00,000,000T"): from a thousand trillion on, the exponent ("2.2e29").  Else with
  // ``digits`` decimals (moneyDigits), at most that many when compact.
  if (Math.abs(value) >= (compact ? compactEnd(digits) : 1e15)) return exponent(value, 1);
  // In "en", as every table beside it: in the browser's own, "127.500" on the axis meant
  // 127,500 beside the table's "184,247.43" (QA: a de-DE browser).
  return value.toLocaleString("en", compact
    ? { notation: "compact", maximumFractionDigits: digits }
    : { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function compactEnd(digits) {
  // The least value compact notation rounds up to a thousand trillions at ``digits``
  // decimals: 9.9996e14 read "1000T" beside the "1.0e15" of 1e15.
  return 1e15 - 5e11 * 10 ** -digits;
}

function exponent(value, digits) {
  // "2.2e29", not toExponential's "2.2e+29"; and "0", not "0.0e0" (an axis from 0).
  return value === 0 ? "0" : value.toExponential(digits).replace("e+", "e");
}

function axisTexts(values, log) {
  // The equity axis's labels for ``values`` (lowest first), in one notation: a curve from
  // 76,560 to 1.53M read "76,560 / 802,663 / 1.5M".  Compact for all when the highest is
  // past a million, with the fewest decimals (one at least) that tell them apart; all with
  // an exponent when it is past compact's trillions ("500T / 750T / 1.0e15" mixed two).
  const [lo, hi] = [values[0], values[values.length - 1]];
  const top = Math.max(Math.abs(lo), Math.abs(hi));
  if (top < 1e6) {
    const digits = moneyDigits(lo, hi, log);
    return values.map((v) => formatMoney(v, digits));
  }
  let texts = [];
  // Up to six: three said "1M / 1.001M / 1.001M" of a million that moved 0.1%.
  for (let digits = 1; digits <= 6; digits++) {
    const say = top >= compactEnd(digits) ? exponent : (v) => formatMoney(v, digits, true);
    texts = values.map((v) => say(v, digits));
    if (new Set(texts).size === new Set(values).size) break;
  }
  return texts;
}

function moneyDigits(lo, hi, log) {
  // The decimals that tell the axis's labels apart: whole numbers said "1 / 1 / 1" for a
  // backtest whose init_cash was 1 (0.87 to 1.09), and "0 / 3 / 5" for 0.205 to 4.98.
  // Two digits of the step between labels; on a log scale two of the lowest label too.
  const half = (hi - lo) / 2;
  let digits = half > 0 ? 1 - Math.floor(Math.log10(half)) : 0;
  if (log && lo > 0) digits = Math.max(digits, 1 - Math.floor(Math.log10(lo)));
  return Math.min(8, Math.max(0, digits));
}

function axisLabels(first, last) {
  // The time axis's ends: their dates ("2020-01-02"), and their times too when both ends
  // fall on one date (a day of minute bars read "2020-01-02" at both ends), to the minute
  // or, if that is one too, the second.  A time with no offset is UTC (see NAIVE_TIME).
  const [a, b] = [String(first), String(last)];
  const naive = NAIVE_TIME.test(a) && NAIVE_TIME.test(b);
  if (!naive || a.slice(0, 10) !== b.slice(0, 10)) return [a.slice(0, 10), b.slice(0, 10)];
  const n = a.slice(0, 16) !== b.slice(0, 16) ? 16 : 19;
  return [a, b].map((text) => `${text.slice(0, 10)} ${text.slice(11, n)} UTC`);
}

function spokenName(series, entries, [first, last], [lo, hi], log) {
  // The image's name for a screen reader, which hears none of its texts (the legend is
  // inside the image): the symbols drawn, the dates, the equity's range and scale, and
  // the legend's note ("top 12 of 200 by sharpe").  ``lo`` and ``hi``: the axis's texts
  // of the lowest and highest equity.
  const names = series.map((s) => (typeof shown === "function" ? shown(s.symbol) : s.symbol)
    + (s.pinned ? " (pinned)" : ""));
  const list = names.length > 1
    ? `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}` : names[0];
  const note = entries.find((e) => !e.series && e.text !== "pinned:");
  return `equity curve of ${list}, ${first} to ${last}, equity from ${lo} `
    + `to ${hi}${log ? ", log scale" : ""}${note ? `; ${note.text}` : ""}`;
}

const DRAWN = new WeakMap();  // a chart's box -> the curves drawn in it, and its width

function fittedWidth(container) {
  // As wide as its box where that is narrower (a phone's 360 px scaled the chart's 11 px
  // texts down to 5), to MIN_WIDTH at least; CHART's width elsewhere, and in a box not
  // laid out (hidden: 0 px).  Less the svg's border.
  const room = container.clientWidth - 2;
  return room > 0 && room < CHART.width ? Math.max(MIN_WIDTH, room) : CHART.width;
}

function fitEquity(container) {
  // The chart in ``container`` drawn again when its box's width asks for another (a
  // window resized, a phone turned): drawn narrow, it stayed narrow on a wide screen.
  const drawn = DRAWN.get(container);
  if (drawn && fittedWidth(container) !== drawn.width) drawEquity(container, drawn.curves);
}

function drawEquity(container, curves) {
  container.replaceChildren();
  DRAWN.delete(container);
  if (!curves.length) return false;
  const c = { ...CHART, width: fittedWidth(container) };
  DRAWN.set(container, { curves, width: c.width });
  const plotW = c.width - c.left - c.right;
  const plotH = c.height - c.top - c.bottom;
  const times = timeAxis(curves);
  // Each series: its points' x positions (time, or index) and the indices to draw.
  let xs, firstLabel, lastLabel;
  if (times) {
    const t0 = Math.min(...times.map((t) => t[0]));
    const t1 = Math.max(...times.map((t) => t[t.length - 1]));
    const span = Math.max(1, t1 - t0);
    xs = times.map((t) => t.map((v) => c.left + ((v - t0) / span) * plotW));
    const starts = curves.map((curve, n) => [times[n][0], curve.points[0][0]]);
    const ends = curves.map((curve, n) => [times[n][times[n].length - 1],
                                           curve.points[curve.points.length - 1][0]]);
    firstLabel = starts.reduce((a, b) => (b[0] < a[0] ? b : a))[1];
    lastLabel = ends.reduce((a, b) => (b[0] > a[0] ? b : a))[1];
  } else {
    const length = Math.max(...curves.map((curve) => curve.points.length));
    xs = curves.map((curve) => curve.points.map(
      (p, i) => c.left + (i / Math.max(1, length - 1)) * plotW));
    firstLabel = curves[0].points[0][0];
    lastLabel = curves[0].points[curves[0].points.length - 1][0];
  }
  const series = curves.map((curve, n) => ({ ...curve, x: xs[n], thin: thin(curve.points, plotW) }));
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const i of s.thin) { lo = Math.min(lo, s.points[i][1]); hi = Math.max(hi, s.points[i][1]); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const log = lo > 0 && hi / lo >= LOG_SPAN;
  const scale = log ? Math.log : (v) => v;
  const [sLo, sHi] = [scale(lo), scale(hi)];
  const y = (v) => c.top + (1 - (scale(v) - sLo) / (sHi - sLo)) * plotH;

  const perRow = Math.max(1, Math.floor((c.width - c.left) / LEGEND.column));
  const entries = legendEntries(series, curves);
  const { slots, rows } = placeLegend(entries, perRow);
  const height = c.height + LEGEND.top + rows * LEGEND.row;
  const [firstText, lastText] = axisLabels(firstLabel, lastLabel);
  const levels = [lo, log ? Math.sqrt(lo) * Math.sqrt(hi) : (lo + hi) / 2, hi];
  const levelTexts = axisTexts(levels, log);
  const svg = svgEl("svg", { viewBox: `0 0 ${c.width} ${height}`, width: c.width, height,
    role: "img", "aria-label": spokenName(series, entries, [firstText, lastText],
                                          [levelTexts[0], levelTexts[2]], log) });
  svg.appendChild(svgEl("line", { class: "axis", x1: c.left, y1: c.top + plotH,
                                  x2: c.left + plotW, y2: c.top + plotH }));
  svg.appendChild(svgEl("line", { class: "axis", x1: c.left, y1: c.top, x2: c.left,
                                  y2: c.top + plotH }));
  levels.forEach((v, i) => {
    svg.appendChild(svgEl("text", { x: c.left - 6, y: y(v) + 4, "text-anchor": "end" },
                          levelTexts[i]));
  });
  if (log) {
    svg.appendChild(svgEl("text", { class: "scale", x: c.left + 6, y: c.top + 10 },
                          "log scale"));
  }
  svg.appendChild(svgEl("text", { x: c.left, y: c.height - 10 }, firstText));
  svg.appendChild(svgEl("text", { x: c.left + plotW, y: c.height - 10, "text-anchor": "end" },
                        lastText));
  const colorOf = (s, n) => s.color || COLORS[n % COLORS.length];
  series.forEach((s, n) => {
    const d = s.thin.map((i, k) => `${k ? "L" : "M"}${s.x[i].toFixed(1)},${y(s.points[i][1]).toFixed(1)}`);
    const path = svgEl("path", { class: "equity", "data-symbol": s.symbol, d: d.join(""),
                                 fill: "none", stroke: colorOf(s, n), "stroke-width": 1.5 });
    if (s.pinned) {
      path.setAttribute("stroke-dasharray", "6 3");
      path.setAttribute("data-pinned", "");
    }
    svg.appendChild(path);
  });
  const legend = svgEl("g", { class: "legend" });
  entries.forEach((e, n) => {
    const at = { x: c.left + (slots[n] % perRow) * LEGEND.column,
                 y: c.height + LEGEND.top + Math.floor(slots[n] / perRow) * LEGEND.row };
    if (!e.series) {
      legend.appendChild(svgEl("text", { ...at, class: e.row && !e.wide ? "heading" : "note" }, e.text));
      return;
    }
    const s = e.series;
    const label = svgEl("text", { ...at, fill: colorOf(s, series.indexOf(s)),
                                  "data-symbol": s.symbol }, e.text);
    if (s.pinned) label.setAttribute("class", "pinned");
    legend.appendChild(label);
  });
  svg.appendChild(legend);
  container.appendChild(svg);
  return true;
}
