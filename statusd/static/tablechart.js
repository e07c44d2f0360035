/* The equity chart of a backtest's symbols' table (results.js): what the table puts first.
 *
 * tableChart(symbols, draw, kept, marked) keeps the chart of a run_backtest result's
 * symbols (result.symbols); kept is the pins of a table built again ([[symbol, m]], at
 * most MAX_PINNED, in the order pinned), drawn at the first order().  order(rows, label,
 * descending) is the table's order after a sort (rows: [{symbol, m}], m the symbol's
 * metrics; label the column's name): the chart then draws the first MAX_SERIES symbols
 * of it that have a curve, and says which (curves.note: "top 12 of 200 by sharpe
 * (highest first)").  toggle(symbol, m) pins a symbol's curve onto the chart even when a
 * sort leaves it out, or unpins it; it returns false, and pins nothing, when MAX_PINNED
 * are pinned already.  So at most MAX_SERIES + MAX_PINNED curves are drawn, each in a
 * colour of its own that it keeps while it stays drawn (chart.js's keepColors).  After
 * each drawing, marked(colors, pinned) tells the table each drawn symbol's colour (a
 * Map) and the pinned symbols (a Set).
 *
 * A symbol's curve is read from the result the first time it is drawn and kept (its
 * times are parsed once, chart.js): a sort or a pin reads at most the curves drawn,
 * never the whole result again.  draw(curves) is the page's: drawEquity into its box.
 */
"use strict";

function tableChart(symbols, draw, kept, marked) {
  const curves = new Map();  // symbol -> {symbol, points}, or null if it cannot be drawn
  const curveOf = (symbol, m) => {
    if (!curves.has(symbol)) {
      const curve = m && m.equity_curve;
      const points = Array.isArray(curve)
        ? curve.filter((p) => Array.isArray(p) && Number.isFinite(p[1])) : [];
      curves.set(symbol, points.length >= 2 ? { symbol, points } : null);
    }
    return curves.get(symbol);
  };
  // As equityCurves counts them: the symbols with a curve of two points or more.
  const total = Object.values(symbols).filter(
    (m) => m && Array.isArray(m.equity_curve) && m.equity_curve.length >= 2).length;
  const pinned = new Map(kept);  // symbol -> its metrics, in the order pinned
  let rows = [];
  let sort = { label: "", descending: true };
  let colors = new Map();

  function redraw() {
    const top = [];
    for (const row of rows) {
      if (top.length >= MAX_SERIES) break;
      const curve = curveOf(row.symbol, row.m);
      if (curve) top.push(curve);
    }
    const inTop = new Set(top.map((curve) => curve.symbol));
    const more = [...pinned].filter(([symbol]) => !inTop.has(symbol))
      .map(([symbol, m]) => curveOf(symbol, m)).filter(Boolean);
    colors = keepColors(colors, [...top, ...more].map((curve) => curve.symbol));
    const drawn = [...top, ...more].map((curve) => ({
      ...curve, pinned: pinned.has(curve.symbol), color: COLORS[colors.get(curve.symbol)] }));
    // Fewer than MAX_SERIES drawn: every row was looked at, so they are all that can be
    // (a curve of two points, one null, was counted: "top 2 of 3" with nothing left out).
    drawn.total = top.length < MAX_SERIES ? top.length : total;
    if (top.length < drawn.total) drawn.note = describe(top.length, drawn.total, sort);
    draw(drawn);
    marked(new Map([...colors].map(([symbol, n]) => [symbol, COLORS[n]])), new Set(pinned.keys()));
  }

  return {
    order(inOrder, label, descending) {
      rows = inOrder;
      sort = { label, descending };
      redraw();
    },
    toggle(symbol, m) {
      if (pinned.has(symbol)) pinned.delete(symbol);
      else if (pinned.size >= MAX_PINNED) return false;
      else pinned.set(symbol, m);
      redraw();
      return true;
    },
  };
}

function describe(n, total, sort) {
  // Which symbols the chart draws, as its reader says it: "top 12 of 200 by sharpe ...".
  if (sort.label === "symbol") {
    return `first ${n} of ${total} by symbol (${sort.descending ? "Z to A" : "A to Z"})`;
  }
  return sort.descending ? `top ${n} of ${total} by ${sort.label} (highest first)`
    : `bottom ${n} of ${total} by ${sort.label} (lowest first)`;
}
