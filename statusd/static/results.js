/* The built-in quant tools' results as tables a researcher reads (QUANT.md, "Result shapes").
 *
 * showResultTables(record, box, raw, draw) draws a done task's result into box when it
 * has the shape of a run_backtest or an analyze_factor result, and closes raw (the
 * <details> of the result's JSON, which stays there); for any other result it empties
 * box and opens raw: the JSON view, as before.  It returns true when the view draws
 * the equity chart itself, through draw(curves): a backtest's table does; for any
 * other result the page draws equityCurves(result), the first of its symbols.  The shape is recognised, not the
 * tool's name, and checked whole before anything is drawn: a field missing, an array
 * where an object is due, a string where a number is due, and the result is shown as
 * JSON only.
 *
 * run_backtest: its summary, and a table of its symbols sorted by sharpe (highest
 * first); a click on a column's header sorts by that column, a second one reverses;
 * nulls stay last; symbols sort in the browser's locale, digits as numbers (S9 before
 * S10), and order a metric's ties.  Only the rows in the table's box's view and a
 * view's height more each side are in the DOM, a spacer row as tall as the rest
 * (rowWindow): 5,000 symbols laid out whole took 1.3 s to show and 0.8 s a sort in
 * headless Chromium; a few dozen rows, tens of milliseconds (bench/dashboard_table.py).
 * A row comes back as it was (pin, colour, mark); a row holding the focus stays in the
 * DOM while it is scrolled away or a sort moves it, so its pin keeps the focus;
 * aria-rowcount and each row's aria-rowindex tell a screen reader how many rows there
 * are and where it is.
 * The trade-off: the browser's find (Ctrl+F) finds only the rows in the DOM, those near
 * the view, not a symbol scrolled far away.  The equity chart draws the symbols first
 * in the table's order and redraws at each sort (tablechart.js); the button before a
 * symbol (Enter or Space) pins its curve onto the chart, or unpins it.  A drawn
 * symbol's button is in its curve's colour, a pinned one's filled, its row marked; a
 * pin refused (too many) is said above the table.  Its sort and pins are kept per run
 * (id, started_at, attempts) for the page's life, the last 50 runs, and are there again
 * when the task is opened again; a retry starts in sharpe order, unpinned.  A result of
 * no symbols: its summary and one line that says so, no table, no chart.
 * analyze_factor: IC, rank IC, top minus bottom and quantile mean returns per
 * horizon; rank autocorrelation and turnover per lag.  Numbers read as `spoolq demo`
 * prints them (spool/cli/demo.py); null is "–".  Job text goes in through
 * textContent (app.js's el and shown): it is never HTML.
 */
"use strict";

const showResultTables = (() => {
  const NONE = "–";
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const isNumber = (v) => v === null || (typeof v === "number" && Number.isFinite(v));
  const isCount = (v) => v === null || Number.isInteger(v);

  // Python's format specs, as demo.py uses them.
  // A zero is unsigned in every column, as is what rounds to one: -0.0 read "-0.00"
  // through Intl (final equity) where toFixed wrote "0.00", and -0.0004 read "-0.0%".
  const unsigned = (text) => (/^-[^1-9]*$/.test(text) ? text.slice(1) : text);
  const orNone = (format) => (v) => (v === null || v === undefined ? NONE
    : unsigned(format(v)));
  const pct = (digits) => orNone((v) => `${(v * 100).toFixed(digits)}%`);
  const fixed = (digits) => orNone((v) => v.toFixed(digits));
  const integer = orNone((v) => String(v));
  // One formatter for every cell: toLocaleString made one a call (110 ms for 5,000 rows).
  const money = orNone(new Intl.NumberFormat("en", {
    minimumFractionDigits: 2, maximumFractionDigits: 2 }).format);
  const exp2 = orNone((v) => v.toExponential(2).replace(/e([+-])(\d)$/, "e$10$2"));
  const general = orNone((v) => String(Number(v.toPrecision(4))));

  const SYMBOL_COLUMNS = [
    { key: "total_return", label: "total return", format: pct(1) },
    { key: "annualized_return", label: "annualized return", format: pct(1) },
    { key: "annualized_volatility", label: "volatility", format: pct(1) },
    { key: "sharpe", label: "sharpe", format: fixed(2) },
    { key: "max_drawdown", label: "max drawdown", format: pct(1) },
    { key: "num_trades", label: "trades", format: integer, count: true },
    { key: "num_closed_trades", label: "closed trades", format: integer, count: true },
    { key: "win_rate", label: "win rate", format: pct(0) },
    { key: "final_equity", label: "final equity", format: money },
  ];

  /* ---- run_backtest ------------------------------------------------------------ */

  function isBacktest(result) {
    if (!isObject(result) || !isObject(result.symbols) || !isObject(result.summary)) return false;
    const summary = Object.values(result.summary);
    if (!summary.every((v) => isNumber(v) || typeof v === "string")) return false;
    return Object.values(result.symbols).every((m) => isObject(m) && SYMBOL_COLUMNS.every(
      (c) => c.key in m && (c.count ? isCount(m[c.key]) : isNumber(m[c.key]))));
  }

  function summaryValue(key, value) {
    // As demo.py's summary line: returns, drawdowns and win rates in percent.
    if (value === null) return NONE;
    if (typeof value === "string") return shown(value);
    if (key.includes("sharpe")) return fixed(2)(value);
    if (/return|drawdown|win_rate/.test(key)) return pct(1)(value);
    return Number.isInteger(value) ? String(value) : general(value);
  }

  function backtestView(result, draw, order) {
    const view = el("section", { class: "result-view backtest" });
    // Its settings as `spoolq demo` heads its table (an unset one, null, only in the JSON).
    const params = isObject(result.params) ? Object.entries(result.params)
      .filter(([, v]) => v !== null).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ") : "";
    const count = Object.keys(result.symbols).length;
    const what = [result.strategy ?? "", params, `on ${count} symbol${count === 1 ? "" : "s"}`];
    view.appendChild(el("h3", {}, shown(`backtest: ${what.filter(Boolean).join(" ")}`)));
    const dl = el("dl", { class: "fields summary" });
    for (const [key, value] of Object.entries(result.summary)) {
      dl.appendChild(el("dt", {}, shown(key.replaceAll("_", " "))));
      dl.appendChild(el("dd", { "data-field": key }, summaryValue(key, value)));
    }
    view.appendChild(dl);
    if (!count) {  // an empty table and an empty chart said nothing: one line says it
      view.appendChild(el("p", { class: "muted empty" }, "no symbols in this result"));
      draw([]);
      return view;
    }
    // A symbol with no bar in the run's window (start, end) is all dashes and no curve, and
    // nothing on the page said why: "bars" is in the JSON only (QA h392).
    const empty = Object.values(result.symbols).filter((m) => isObject(m) && m.bars === 0).length;
    if (empty) {
      view.appendChild(el("p", { class: "muted note" }, `${empty === count ? "no symbol has a"
        : `${empty} of ${count} symbol${count === 1 ? "" : "s"} ${empty === 1 ? "has" : "have"} no`
        } bar in the run's window (start, end, and the data's dates): their figures are –, `
        + "with no curve."));
    }
    const said = el("p", { class: "pin-status error", role: "status" });
    said.hidden = true;
    view.appendChild(said);
    view.appendChild(symbolTable(result.symbols, draw, said, order));
    return view;
  }

  function symbolTable(symbols, draw, said, order) {
    // order: {key, descending, pins}, the run's (kept); a sort and a pin write it.
    const table = el("table", { class: "result-table symbols" });
    const head = el("tr", { "aria-rowindex": "1" });
    const columns = [{ key: "symbol", label: "symbol" }, ...SYMBOL_COLUMNS];
    // Each symbol's cells are formatted once; a row shown writes them in.  px: the
    // height of its row as last measured (0: not yet).
    const rows = Object.entries(symbols).map(([symbol, m]) => ({ symbol, m, at: 0, px: 0,
      name: shown(symbol), texts: SYMBOL_COLUMNS.map((c) => c.format(m[c.key])) }));
    const bySymbol = new Map(rows.map((r) => [r.symbol, r]));
    // Its rows are there for a screen reader to count, though few are in the DOM.
    table.setAttribute("aria-rowcount", String(rows.length + 1));
    const tbody = el("tbody");
    const slots = symbolRows();
    const wrap = el("div", { class: "table-wrap result-scroll" });
    const thead = el("thead");
    const render = rowWindow(wrap, thead, tbody, rows, columns.length, slots.show,
      (tr) => bySymbol.get(tr.dataset.symbol));
    const kept = order.pins.filter((symbol) => bySymbol.has(symbol))
      .map((symbol) => [symbol, bySymbol.get(symbol).m]);
    const chart = tableChart(symbols, draw, kept, (colors, pinned) => {
      order.pins = [...pinned];
      slots.mark(colors, pinned);
    });
    tbody.addEventListener("click", (event) => {
      const pin = event.target.closest("button.pin");
      const row = pin && bySymbol.get(pin.closest("tr").dataset.symbol);
      if (!row) return;
      const done = chart.toggle(row.symbol, row.m);
      said.hidden = done;
      said.textContent = done ? "" : `${row.name} is not drawn: ${MAX_PINNED} symbols `
        + "are pinned already; unpin one to pin another.";
    });
    const sortBy = (key, descending) => {
      order.key = key;
      order.descending = descending;
      rows.sort(compare(key, descending));
      rows.forEach((row, i) => { row.at = i; });
      render(false);  // the same place in the box, the rows of the new order there
      for (const th of head.children) {
        th.setAttribute("aria-sort", th.dataset.key !== key ? "none"
          : descending ? "descending" : "ascending");
      }
      chart.order(rows, columns.find((c) => c.key === key).label, descending);
    };
    for (const c of columns) {
      const th = el("th", { scope: "col", "data-key": c.key, class: c.key === "symbol" ? "" : "num" });
      const button = el("button", { type: "button" }, c.label);
      // A first click sorts a metric highest first and the symbols A to Z; a second reverses.
      button.addEventListener("click", () => sortBy(c.key, order.key === c.key
        ? !order.descending : c.key !== "symbol"));
      th.appendChild(button);
      head.appendChild(th);
    }
    table.appendChild(thead).appendChild(head);
    table.appendChild(tbody);
    table.appendChild(sizer(rows, slots.newSlot()));
    sortBy(order.key, order.descending);
    wrap.appendChild(table);
    return wrap;
  }

  function symbolRows() {
    // The trs that show symbols: those in the DOM, each its symbol's, and those out of
    // it, kept to show another.  show(rows) gives the trs of those rows ({symbol, name,
    // texts, at}: at, its place), in order, a row shown already keeping its tr (and the
    // focus in it); mark(colors, pinned) marks each symbol drawn (its curve's colour, a
    // Map) and pinned (a Set), as the chart tells it.
    const slotOf = new Map();  // symbol -> the row that shows it, of those in the DOM
    const free = [];  // rows out of the DOM, to show another symbol
    let marks = new Map();  // symbol -> its curve's colour, as its row shows it
    let pins = new Set();
    const newSlot = () => {
      const tr = el("tr");
      const th = tr.appendChild(el("th", { scope: "row" }));
      // Its name is the row's text; the button's is its label (a glyph drawn by app.css).
      const pin = th.appendChild(el("button", { type: "button", class: "pin",
        "aria-pressed": "false", title: "pin its curve on the equity chart (again: unpin)" }));
      const name = th.appendChild(document.createTextNode(""));
      const cells = SYMBOL_COLUMNS.map(
        () => tr.appendChild(el("td", { class: "num" })).appendChild(document.createTextNode("")));
      return { symbol: null, tr, th, pin, name, cells, color: "", on: false };
    };
    const markSlot = (slot) => {
      const color = marks.get(slot.symbol) || "";
      const on = pins.has(slot.symbol);
      if (slot.color !== color) slot.pin.style.color = slot.color = color;
      if (slot.on !== on) {
        slot.on = on;
        slot.pin.setAttribute("aria-pressed", String(on));
        slot.tr.classList.toggle("pinned", on);
      }
    };
    const write = (slot, row) => {
      slot.symbol = row.symbol;
      slot.tr.dataset.symbol = row.symbol;
      // Named by its symbol alone: a screen reader says it at each cell, not the pin's label.
      slot.th.setAttribute("aria-label", row.name);
      slot.pin.setAttribute("aria-label", `pin ${row.name} on the equity chart`);
      slot.name.data = row.name;
      row.texts.forEach((text, i) => { slot.cells[i].data = text; });
      markSlot(slot);
    };
    return {
      newSlot,
      show(rows) {
        const keep = new Set(rows.map((row) => row.symbol));
        for (const [symbol, slot] of slotOf) {
          if (!keep.has(symbol)) {
            slotOf.delete(symbol);
            free.push(slot);
          }
        }
        return rows.map((row) => {
          let slot = slotOf.get(row.symbol);
          if (!slot) {
            slot = free.pop() || newSlot();
            write(slot, row);
            slotOf.set(row.symbol, slot);
          }
          slot.tr.setAttribute("aria-rowindex", String(row.at + 2));
          return slot.tr;
        });
      },
      mark(colors, pinned) {
        // Only the rows in the DOM whose mark changes are touched; a row shown later is
        // marked then.
        const changed = new Set([...marks.keys(), ...colors.keys(), ...pins, ...pinned]);
        marks = colors;
        pins = pinned;
        for (const symbol of changed) if (slotOf.has(symbol)) markSlot(slotOf.get(symbol));
      },
    };
  }

  function sizer(rows, slot) {
    // A row no one sees (app.css: visibility: collapse) that holds each column's longest
    // text: the columns are as wide as every row needs, not only the rows shown, and keep
    // their widths while rows scroll in and out.
    const longest = (texts) => texts.reduce((a, b) => (b.length > a.length ? b : a), "");
    slot.name.data = longest(rows.map((row) => row.name));
    slot.cells.forEach((cell, i) => { cell.data = longest(rows.map((row) => row.texts[i])); });
    const foot = el("tfoot", { class: "sizer", "aria-hidden": "true" });
    foot.appendChild(slot.tr);
    return foot;
  }

  /* ---- the symbols' table: a window of its rows ---------------------------------- */

  const ROW_PX = 30;  // a row's height until rows are measured
  const VIEW_PX = 512;  // the table's box's height until it is laid out (app.css: 32rem)

  function rowWindow(wrap, thead, tbody, rows, colspan, trsOf, rowOf) {
    // Keeps in tbody the rows in wrap's view and a view's height more each side, and a
    // spacer row in place of each run of the others as tall as they are (measured once
    // shown, guessed until then), so the scrollbar is the whole table's.
    // A row holding the focus stays in the DOM, wherever it is.  trsOf(rows) gives the
    // trs that show those rows (each with .at, its place); rowOf(tr) the row a tr shows.
    // Returns render(false), called here at each scroll and resize of wrap, for a sort.
    const heights = rowHeights(rowOf);
    const guess = heights.guess;
    // Heights as laid out (none while the table is hidden or not yet in the page).
    const measure = (trs) => wrap.clientHeight > 0 && heights.measure(trs);
    const spacers = [];
    const spacer = (k, px) => {
      if (!spacers[k]) {
        spacers[k] = el("tr", { class: "spacer", "aria-hidden": "true" });
        spacers[k].appendChild(el("td", { colspan: String(colspan) }));
      }
      spacers[k].firstChild.style.height = `${px}px`;
      return spacers[k];
    };
    let tops = new Float64Array(1);  // each row's top as last placed; the last, the end
    function place() {
      const n = rows.length;
      tops = new Float64Array(n + 1);
      for (let i = 0; i < n; i += 1) tops[i + 1] = tops[i] + (rows[i].px || guess(rows[i]));
      const view = wrap.clientHeight || VIEW_PX;
      const y = wrap.scrollTop - thead.offsetHeight;
      const first = rowAt(tops, y - view);
      const end = Math.min(n, rowAt(tops, y + 2 * view) + 1);
      const active = document.activeElement;
      const held = tbody.contains(active) ? active.closest("tr") : null;
      const f = held && rowOf(held) ? rowOf(held).at : -1;
      const wanted = rows.slice(first, end);
      if (f >= 0 && f < first) wanted.unshift(rows[f]);
      if (f >= end) wanted.push(rows[f]);
      const trs = trsOf(wanted);
      const nodes = [];
      let at = 0;
      wanted.forEach((row, k) => {
        if (row.at > at) nodes.push(spacer(nodes.length - k, tops[row.at] - tops[at]));
        nodes.push(trs[k]);
        at = row.at + 1;
      });
      if (at < n) nodes.push(spacer(nodes.length - wanted.length, tops[n] - tops[at]));
      arrange(tbody, nodes, held);
      return trs;
    }
    function render(anchored) {
      // Twice at most: rows measured anew move the window once.  anchored (a scroll, a
      // resize): the row at the top of the view stays there though rows above it turned
      // out of another height than guessed (a sort keeps the place in the box instead);
      // at the end of the table the view stays at its end.
      const headPx = thead.offsetHeight;
      const y = wrap.scrollTop - headPx;
      const at = anchored && tops.length > 1 && wrap.clientHeight ? rowAt(tops, y) : -1;
      const off = at < 0 ? 0 : y - tops[at];
      const atEnd = wrap.scrollTop > 0
        && wrap.scrollTop + wrap.clientHeight >= wrap.scrollHeight - 1;
      if (measure(place())) measure(place());
      if (atEnd && wrap.scrollTop + wrap.clientHeight < wrap.scrollHeight - 1) {
        wrap.scrollTop = wrap.scrollHeight;
      } else if (at >= 0 && Math.abs(tops[at] + off + headPx - wrap.scrollTop) >= 1) {
        wrap.scrollTop = tops[at] + off + headPx;
      }
    }
    wrap.addEventListener("scroll", () => render(true), { passive: true });
    new ResizeObserver(() => render(true)).observe(wrap);
    return render;
  }

  function rowHeights(rowOf) {
    // Rows' heights: measure(trs) writes each tr's row's (row.px) and says whether one
    // changed; guess(row) is a row's until it is measured: that of the rows measured
    // whose symbol is as long (a long one wraps onto more lines), or all rows' measured.
    const kinds = new Map();  // a symbol's length -> [rows measured, their heights' sum]
    const all = [0, 0];
    return {
      guess(row) {
        const [n, px] = kinds.get(row.name.length) || all;
        return n ? px / n : ROW_PX;
      },
      measure(trs) {
        let changed = false;
        for (const tr of trs) {
          // In whole pixels: the same row measured 31.98 or 32.48 px as its border fell
          // (collapsed, half in each row), and a sort that put other rows above the view
          // changed their sum by a row.
          const px = Math.round(tr.getBoundingClientRect().height);
          const row = rowOf(tr);
          if (px && px !== row.px) {
            if (!kinds.has(row.name.length)) kinds.set(row.name.length, [0, 0]);
            for (const kind of [all, kinds.get(row.name.length)]) {
              kind[0] += row.px ? 0 : 1;
              kind[1] += px - row.px;
            }
            row.px = px;
            changed = true;
          }
        }
        return changed;
      },
    };
  }

  // The row at y (px from the top of the first row): the first whose bottom is below y;
  // tops[i] is row i's top, tops[n] the bottom of the last.
  function rowAt(tops, y) {
    let lo = 0;
    let hi = tops.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (tops[mid + 1] > y) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  function arrange(parent, nodes, held) {
    // parent's children become nodes, in this order, without moving held (a row holding
    // the focus, which a row taken out and put back loses): the others move around it.
    const wanted = new Set(nodes);
    for (const child of [...parent.children]) if (!wanted.has(child)) child.remove();
    let next = null;
    for (let i = nodes.length - 1; i >= 0; i -= 1) {
      const node = nodes[i];
      if (node !== held && (node.parentNode !== parent || node.nextSibling !== next)) {
        parent.insertBefore(node, next);
      }
      next = node;
    }
  }

  // Symbols in the order a reader expects: the browser's locale, digits as numbers (S9
  // before S10, "beta" beside "Alpha", not after every capital as character codes had it).
  // Symbols it finds alike (S01 and S1) go by their character codes, one order every time.
  const SYMBOL_ORDER = new Intl.Collator(undefined, { numeric: true });

  function bySymbol(a, b) {
    return SYMBOL_ORDER.compare(a.symbol, b.symbol)
      || (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0);
  }

  function compare(key, descending) {
    if (key === "symbol") return descending ? (a, b) => bySymbol(b, a) : bySymbol;
    return (a, b) => {
      const x = a.m[key];
      const y = b.m[key];
      if (x === null || y === null) return (x === null) - (y === null) || bySymbol(a, b);
      return (descending ? y - x : x - y) || bySymbol(a, b);
    };
  }

  /* ---- analyze_factor ------------------------------------------------------------ */

  function isStats(s) {
    return isObject(s) && ["mean", "std", "ir", "t_stat"].every((k) => k in s && isNumber(s[k]))
      && "n" in s && isCount(s.n);
  }

  function isFactor(result) {
    if (!isObject(result) || !isObject(result.horizons)) return false;
    if (!isObject(result.rank_autocorrelation) || !isObject(result.turnover)) return false;
    const horizons = Object.values(result.horizons);
    return horizons.length > 0 && horizons.every((h) => isObject(h) && isStats(h.ic)
        && isStats(h.rank_ic) && Array.isArray(h.quantile_mean_return)
        && h.quantile_mean_return.every(isNumber) && "top_minus_bottom" in h
        && isNumber(h.top_minus_bottom))
      && Object.values(result.rank_autocorrelation).every(isNumber)
      && Object.values(result.turnover).every((t) => isObject(t) && "top" in t
        && isNumber(t.top) && "bottom" in t && isNumber(t.bottom));
  }

  function table(className, labels, rows) {
    // rows: [[key, [cell text, ...]], ...]; the first cell heads its row.
    const t = el("table", { class: `result-table ${className}` });
    const head = el("tr");
    labels.forEach((label, i) => head.appendChild(el("th", { scope: "col", class: i ? "num" : "" }, label)));
    t.appendChild(el("thead")).appendChild(head);
    const tbody = t.appendChild(el("tbody"));
    for (const [key, cells] of rows) {
      const tr = tbody.appendChild(el("tr", { "data-key": key }));
      tr.appendChild(el("th", { scope: "row" }, shown(key)));
      for (const text of cells) tr.appendChild(el("td", { class: "num" }, text));
    }
    const wrap = el("div", { class: "table-wrap" });
    wrap.appendChild(t);
    return wrap;
  }

  function factorView(result) {
    const view = el("section", { class: "result-view factor" });
    const params = isObject(result.params) ? ` ${JSON.stringify(result.params)}` : "";
    view.appendChild(el("h3", {}, shown(`factor analysis: ${result.factor ?? ""}${params} `
      + `over ${result.symbols ?? "?"} symbols × ${result.dates ?? "?"} dates`)));
    const horizons = Object.entries(result.horizons);
    const quantiles = Math.max(...horizons.map(([, h]) => h.quantile_mean_return.length));
    const q = Array.from({ length: quantiles }, (_, i) => `Q${i + 1}`);
    // Each figure QUANT.md gives of IC and rank IC (the stds and the rank IC's t were in
    // the JSON only: QA h392).
    view.appendChild(table("horizons", ["horizon", "IC mean", "IC std", "IC IR", "t", "n",
      "rank IC mean", "rank IC std", "rank IC IR", "rank t", "top−bottom", ...q],
    horizons.map(([horizon, h]) => [horizon, [
      fixed(4)(h.ic.mean), fixed(4)(h.ic.std), fixed(3)(h.ic.ir), fixed(2)(h.ic.t_stat),
      integer(h.ic.n), fixed(4)(h.rank_ic.mean), fixed(4)(h.rank_ic.std),
      fixed(3)(h.rank_ic.ir), fixed(2)(h.rank_ic.t_stat), exp2(h.top_minus_bottom),
      ...q.map((_, i) => exp2(h.quantile_mean_return[i]))]])));
    const notes = [];
    if (result.dates === 0) {
      // Done, every figure a dash, and nothing said why (QA h392: horizons [1, 5000] over
      // 2,520 bars): a date is in the sample only where every horizon's return is defined.
      const longest = Math.max(...horizons.map(([horizon]) => Number(horizon)).filter(Number.isFinite));
      notes.push("No date is in the sample: a date counts only where the factor and every "
        + `horizon's forward return are defined${Number.isFinite(longest) ? ` (the longest, ${
          longest} bars, among them)` : ""}; too few bars in the window leaves none.`);
    }
    if (quantiles > 1) {
      notes.push(`Q1 to Q${quantiles}: mean forward return of each factor quantile, Q1 the `
        + "lowest factor values.");
    }
    if (horizons.some(([horizon]) => Number(horizon) > 1)) {
      notes.push("t for horizons over 1 bar overstates significance: the ICs of overlapping horizons are not independent.");
    }
    if (notes.length) view.appendChild(el("p", { class: "muted note" }, notes.join(" ")));
    const autocorr = result.rank_autocorrelation;
    const lags = [...new Set([...Object.keys(autocorr), ...Object.keys(result.turnover)])];
    // A lag in one of the two only: its own value, never the object's ("toString" read
    // Object.prototype.toString, and the view failed as "unavailable").
    const own = (values, lag) => (Object.hasOwn(values, lag) ? values[lag] : null);
    if (lags.length) {
      view.appendChild(table("lags", ["lag", "rank autocorrelation", "turnover top",
        "turnover bottom"], lags.map((lag) => {
        const turnover = own(result.turnover, lag) || { top: null, bottom: null };
        return [lag, [fixed(3)(own(autocorr, lag)), pct(1)(turnover.top),
          pct(1)(turnover.bottom)]];
      })));
    }
    return view;
  }

  /* ---- the task view's part ----------------------------------------------------- */

  // Each run's sort and pins as its reader left them, for the page's life (not stored):
  // the last RUNS_KEPT runs, a run its id, start and attempts (a retry starts fresh).
  const RUNS_KEPT = 50;
  const orders = new Map();  // run -> {key, descending, pins}, the most recent last
  function orderOf(record) {
    const run = `${record.id}\n${record.started_at}\n${record.attempts}`;
    const order = orders.get(run) || { key: "sharpe", descending: true, pins: [] };
    orders.delete(run);
    orders.set(run, order);
    if (orders.size > RUNS_KEPT) orders.delete(orders.keys().next().value);
    return order;
  }

  let drawn = null;  // the run whose tables box holds: a second render of it keeps its sort
  let charted = false;  // whether its view draws the chart

  return function show(record, box, raw, draw) {
    const result = record.state === "done" ? record.result : undefined;
    const run = `${record.id}\n${record.attempts}\n${record.finished_at}`;
    if (drawn === run && !box.hidden) return charted;
    charted = isBacktest(result);
    const view = charted ? backtestView(result, draw, orderOf(record))
      : isFactor(result) ? factorView(result) : null;
    drawn = view ? run : null;
    box.replaceChildren(...(view ? [view] : []));
    box.hidden = !view;
    raw.open = !view;
    return charted;
  };
})();
