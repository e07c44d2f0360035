/* spoolq dashboard: counts, a live task list with filters, and a task view.
 *
 * Live updates come from two WebSockets: /api/v1/ws/events?progress=1&view=brief
 * keeps the list and the counts current (brief rows: a large job's params and
 * result are not sent at each of its moves); /api/v1/ws/tasks/{id} drives the open task
 * (snapshot, progress, transitions; the server closes it after the terminal
 * state; a retry or re-drop of the open task after that comes by the events
 * socket).  The events socket is opened before the list is fetched, so nothing
 * that happens in between is missed; after a reconnect the list is fetched
 * again.  While a socket is down (statusd away, a proxy that passes no
 * WebSocket) the list, the counts and the open task are read over REST at each
 * try to reconnect.  While statusd does not answer, the processor's liveness is shown
 * unknown and the task view says it is as last seen; its note also says what the task's
 * fields can't: a run cut short and requeued (running -> pending on either stream), a
 * running job with no processor left to run it, what "not found" may mean.  The list
 * keeps its newest MAX_ROWS rows as new ones come (more if "older tasks" brought more),
 * each new one where statusd's order puts it (sortKey); a row shows its progress or error
 * message itself, not only on hover.  The task's state is a polite live region, which a
 * screen reader says when it changes.
 * While statusd loads its index at start (its list, tasks and streams answer 503
 * "indexing"), the list and the task view say so and how far, the counts are its start
 * scan's, and the page goes live once the index is in, without a reload.
 * A fetch that fails is said on the page and tried again, not swallowed.  The tab's title
 * names what the view shows: the task, its state and progress, or the list's filter.  All
 * text goes in through textContent: job fields are never HTML.
 *
 * The task view cancels a pending or running task and retries a failed one, as
 * `spoolq cancel` and `spoolq retry` do, through the API's writes: statusd's token
 * (STATUSD_TOKEN) is asked for on the page the first time and kept for the tab
 * (sessionStorage), sent as a bearer header, never in a cookie or the URL.
 *
 * Every URL the page asks for (its scripts and style in index.html, fetches, WebSockets,
 * links to records) is relative to the page's own URL: "api/v1/stats", not "/api/v1/stats",
 * so the dashboard works as statusd serves it at "/" and behind a reverse proxy that serves
 * statusd at a sub-path ("/spoolq/", which must end in "/").  The API paths named above
 * are statusd's; the page reaches them through its own base.
 */
"use strict";

const TERMINAL = new Set(["done", "failed"]);
const TASK_GONE = 1008;   // the close code of a task stream whose task left the spool
const PAGE_SIZE = 50;
const MAX_ROWS = 1000;        // rows kept as new jobs arrive (the API's largest page)
const STATS_EVERY_MS = 5000;
// The error type of a stats 503 when statusd cannot read the processors' state.
const HEARTBEAT_MS = 1000;    // how often a processor writes its status (busy workers)
const MAX_SHOWN_CHARS = 100000;  // of a result printed in the task view
const RETRY_MS = 2000;        // a list or task view that could not load tries again this often
const EARLIER_MESSAGE_CHARS = 300;  // of a message an earlier failure keeps (spool/models.py)
// A record larger than this is not loaded whole: a page cannot parse one of 678 MB (a
// string that long is past what the browser holds), and the view fetched it again and
// again.  Its state and times are shown, and a link to it.
const MAX_RECORD_BYTES = 256 * 1024 * 1024;
// A task id as DESIGN section 2 fixes it: a link cut short or run into the text after it
// ("bt-7)." pasted from a chat) names no task that can ever be.
const VALID_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ui = {
  filter: { state: "", tool: "" },
  actionSaidAt: null,     // the task's state a cancel's or retry's answer was said at
  rows: new Map(),        // id -> { tr, key, record }: the row, its order, its brief record
  cursor: null,
  events: null,
  eventsDelay: 500,
  eventsLater: null,      // the events socket's next try while it is down (a timer)
  statsTimer: null,
  statsLater: null,       // the stats read again after the processor's next heartbeat
  taskId: null,
  taskSocket: null,
  taskEvent: null,        // the open task's latest record on the events stream
  renderSeq: 0,
  readRefused: false,     // the task error box says the view's first read was refused
  shownRun: null,         // the run whose whole record the task view shows (runOf), or
                          // whose record it cannot have (too large, a 4xx: not fetched again)
  loadingRun: null,       // the run whose whole record is on its way (runOf): told again
                          // meanwhile, it is not asked for twice
  loadingSeq: 0,          // the render (renderSeq) that fetch is of: a later one drops it
  opening: 0,             // the task view's openings, numbered: a try again is its own
  listSeq: 0,
  trimmed: false,         // rows past MAX_ROWS were let go: "older tasks" brings them back
  keep: MAX_ROWS,         // rows kept as new jobs arrive: MAX_ROWS, or as many as paged to
  paging: false,          // a page of "older tasks" is on its way
  during: null,           // transitions that arrive while a list page is on its way
  pageLate: null,         // while a page of "older tasks" comes: moves of rows not shown (by id)
  indexing: false,        // the list's last ask was refused: statusd loads its index
  indexingNote: null,     // the task view's word of it, while its task waits for the index
  total: null,            // the spool's job count at the last stats refresh
  counts: null,           // the last stats' counts and counts_by_tool: what a filter holds
  removed: null,          // statusd's count then of jobs that left the spool (a purge)
  arrived: 0,             // new ids the events stream has told of (a transition from none)
  arrivedTaken: 0,        // of those, the ones told before the latest stats taken was asked
  statsAsked: 0,          // stats asks sent, numbered from 1
  statsTaken: 0,          // the latest-asked stats answer taken (later than any stale one)
  processorAlive: null,   // at the last stats refresh, or a claim since; null: not known
  processors: [],         // the last stats' processors: the status file of each holding its lock
  leftWhy: {},            // the last stats' left_why: why each left tool's pending jobs wait
  toolLimits: new Map(),  // the live processors' attempt limit by tool (GET api/v1/tools)
  toolsOf: null,          // the processors that catalogue is of: "owner started_at" each
  tools: [],              // the tools the last stats named: the tool filter's options
  fieldsOf: null,         // the record the task view's fields show
  unreachable: null,      // since when statusd has not answered (ms), or null
  unavailable: null,      // its refusal then (a 503's "HTTP 503: ..."), or null: no answer
  processorsUnknown: null, // why statusd cannot read the processors' state (its stats said)
  requeued: null,         // the open task's latest requeue seen: { at, why }
  runAttempts: null,      // the attempts of the open task's latest running record seen
  runSince: null,         // when the open task's run started (its record's), if it runs
  shownPercent: "",       // the open task's progress as its view shows it ("42%"), or ""
  heads: 0,               // records the task view has shown (a look at one asks if it is still)
  looking: null,          // the look out at an ended task (checkEndedTask), its AbortController
  tooLarge: null,         // the open task's record size when found too large to load, or null
};

// Whole numbers with their thousands grouped, as in the result tables ("2,500 done").
const COUNT_FORMAT = new Intl.NumberFormat("en");

const $ = (id) => document.getElementById(id);

async function getJSON(url, maxBytes = Infinity, parse = null) {
  // A refusal carries its HTTP status, and the type and message of the API's error body; an answer
  // over maxBytes is not read (its size is the error's tooLarge); parse: of the body's text.
  const control = new AbortController();
  const sentAt = Date.now();
  const sentWall = wallClock();
  const response = await fetch(url, { cache: "no-store", signal: control.signal });
  noteServerClock(response, sentAt, sentWall);
  const size = Number(response.headers.get("Content-Length"));
  if (response.ok && size > maxBytes) {
    control.abort();
    const error = new Error(`${url} is ${size} bytes`);
    error.tooLarge = size;
    throw error;
  }
  if (response.ok) return parse ? parse(await response.text()) : response.json();
  let message = `HTTP ${response.status}`;
  let type = null;
  let detail = "";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) detail = String(body.error.message);
    if (body && body.error && typeof body.error.type === "string") type = body.error.type;
  } catch (err) {
    // not the API's JSON error shape (a proxy's page): the status says enough
  }
  const error = new Error(detail ? `${message}: ${detail}` : message);
  error.status = response.status;
  error.type = type;
  error.detail = detail;
  throw error;
}

// statusd's clock against this browser's: a run's times are statusd's, and a browser set
// minutes off counted a run's time so far and left from them by its own (10 min fast:
// "about to finish" 30 s into a 2 min run).  Each answer's Date (to the second) bounds how far apart
// the two are; the smallest difference within every bound is taken, none for clocks that
// agree to the second.
const serverClock = { lo: -Infinity, hi: Infinity, offset: 0, wall: wallClock() };
// A step of this browser's clock (set by hand, by NTP) larger than this starts the
// reckoning again; a clock slewed by NTP drifts by far less between two looks.
const CLOCK_STEP_MS = 1000;

function wallClock() {
  // This browser's clock against its monotonic one, which no setting of the clock moves:
  // this changes by as much as the clock is set (or jumps after a sleep).
  return Date.now() - performance.now();
}

function followClockSet() {
  // The browser's clock set since the last look: the bounds were of the clock as it was,
  // and an answer by the new one fell outside them, was taken for a page's test clock, and
  // left the reckoning as it was for good (a clock set 10 min on said 10 min more of each
  // run).  It starts again from the next answer; until then statusd's clock is taken to have
  // gone on as it was (not so after a sleep, which the next answer puts right).
  const wall = wallClock();
  const step = wall - serverClock.wall;
  serverClock.wall = wall;
  if (Math.abs(step) < CLOCK_STEP_MS) return;
  serverClock.lo = -Infinity;
  serverClock.hi = Infinity;
  serverClock.offset -= step;
}

function noteServerClock(response, sentAt, sentWall) {
  followClockSet();
  // An answer whose ask went out before the clock was set holds the two clocks mixed.
  if (Math.abs(serverClock.wall - sentWall) >= CLOCK_STEP_MS) return;
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isNaN(date)) return;
  const now = Date.now();
  // statusd's time as it answered is in [date, date + 1 s); this browser's, in [sentAt, now].
  const lo = Math.max(serverClock.lo, date - now);
  const hi = Math.min(serverClock.hi, date + 1000 - sentAt);
  // Out of the bounds so far: statusd's clock was set since (or a page's test clock moved
  // on, which moves performance.now too); the reckoning stays as it was, as if this answer
  // had not come.
  if (lo > hi) return;
  serverClock.lo = lo;
  serverClock.hi = hi;
  serverClock.offset = Math.min(Math.max(0, lo), hi);
}

function serverNow() {
  followClockSet();
  return Date.now() + serverClock.offset;
}

// The spool holds integers up to 64 bits exactly, and one past 2**53 parsed into a double
// prints as another number (18446744073709551615 as 18446744073709552000).  Where the
// browser has JSON.rawJSON, the text shown of a record's params, meta and result keeps
// such integers as their digits, which JSON.stringify prints as they came; elsewhere they
// print as doubles.  Only the text: the record's own fields stay numbers, for the charts
// and tables that compute with them (a raw JSON value is no number: an equity curve with
// nanosecond times broke the chart).
const EXACT_FIELDS = ["params", "meta", "result"];
const exactFields = new WeakMap();  // record -> its EXACT_FIELDS with exact integers

function hasUnsafeInteger(value) {
  // Whether value holds a number past 2**53 that is whole, as every integer parsed from
  // such digits is: only then can the text hold digits the double lost.  A walk of the
  // parsed value, not a search of the text: 23 ms against 90 for a 14 MB backtest's.
  if (typeof value === "number") return Number.isInteger(value) && !Number.isSafeInteger(value);
  if (value === null || typeof value !== "object") return false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i += 1) if (hasUnsafeInteger(value[i])) return true;
    return false;
  }
  for (const key in value) if (hasUnsafeInteger(value[key])) return true;
  return false;
}

function withExactIntegers(record, text, pick) {
  // record: parsed from text already; pick: where it is in the value text holds.
  if (!record || typeof JSON.rawJSON !== "function"
      || !EXACT_FIELDS.some((key) => hasUnsafeInteger(record[key]))) return record;
  const exact = pick(JSON.parse(text, (key, value, context) => (
    typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context.source)
      ? JSON.rawJSON(context.source) : value)));
  const fields = {};
  for (const key of EXACT_FIELDS) if (key in exact) fields[key] = exact[key];
  exactFields.set(record, fields);
  return record;
}

function shownField(record, key) {
  // A record's params, meta or result as its text shows them (see withExactIntegers).
  const exact = exactFields.get(record);
  return exact && key in exact ? exact[key] : record[key];
}

function taskUrl(id) {
  // A task's record (relative, as every URL the page asks for: see the header).
  return `api/v1/tasks/${encodeURIComponent(id)}`;
}

function wholeRecordLink(id) {
  return el("a", { href: taskUrl(id) }, "the whole record");
}

function wsUrl(path) {
  // path: relative, as every URL the page asks for (see the header); ws: or wss: as the page.
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

// What Date.toLocaleString(undefined, { timeZoneName: "short" }) shows, built once: that
// call builds a locale formatter each time (0.18 ms in Chromium), and a burst of 2,000
// jobs (three transitions each, a row drawn at each) spent a second of script on it.
const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "numeric", day: "numeric",
  hour: "numeric", minute: "numeric", second: "numeric", timeZoneName: "short",
});

function fmtTime(value) {
  if (!value) return "";
  const date = new Date(value);
  // The browser's zone, named: spoolq and the records say UTC.
  return Number.isNaN(date.getTime()) ? String(value) : TIME_FORMAT.format(date);
}

function fmtSpan(seconds) {
  // A minute or more in minutes and hours: a long backtest is "1 h 30 min", not "5400.00 s".
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

function runningSince(record) {
  return record.started_at || (record.progress && record.progress.started_at) || null;
}

function fmtSince(since) {
  // How long a running job has run, by statusd's clock as this browser reckons it (see
  // noteServerClock; never below zero).
  const started = Date.parse(since);
  return Number.isNaN(started) ? "" : fmtDuration(Math.max(0, (serverNow() - started) / 1000));
}

function tickRunning() {
  // Once a second: every running job's time so far, in the list and the task view.
  for (const node of document.querySelectorAll("[data-since]")) {
    node.textContent = fmtSince(node.dataset.since);
  }
  for (const node of document.querySelectorAll("[data-until]")) {
    node.textContent = fmtLeft(Number(node.dataset.until));
  }
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  return seconds < 60 ? `${seconds.toFixed(2)} s` : fmtSpan(seconds);
}

// Characters that change how the text around them reads without being seen: bidi
// overrides and isolates (U+202E shows "evil" as "live"), zero-width ones (two tools
// that look alike), other controls.  Job text shows them as \uXXXX escapes, as the CLI does.
const HIDDEN_CHARS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;

function shown(text) {
  return String(text).replace(HIDDEN_CHARS,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function el(name, attrs, text) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/* ---- counts and processor status ------------------------------------------------ */

function reachable(err) {
  // Whether statusd answered the page's last read (err: why not).  While it does not,
  // what the page shows is as last seen: the processor's liveness is not known (it said
  // "processor: up" in green all the while statusd was down), and the task view says so.
  if (!err) {
    if (ui.unreachable !== null) reconnectEvents();
    ui.unreachable = null;
  } else if (ui.unreachable === null) {
    ui.unreachable = Date.now();
    ui.processorAlive = null;
    const node = $("processor");
    node.textContent = "processor: ?";
    node.className = "state";
    processorNote("");  // a stop's note is as stale as the "stopping" it went with
    $("workers").textContent = "";
    $("oldest").textContent = "";
  }
  // A 503 (the spool's disk failing, a record replaced faster than it can be sent) is an
  // answer: statusd runs and says why, which "unreachable" hid.
  ui.unavailable = err && err.status ? err.message : null;
  // A refusal's message is in away() already (the tooltip said it twice); no answer's
  // (a network error) is not.
  if (err) $("processor").title = ui.unavailable === null ? `${away()}: ${err.message}` : away();
  renderNote();
}

function away() {
  const since = fmtTime(ui.unreachable);
  return ui.unavailable === null ? `statusd unreachable since ${since}`
    : `statusd unavailable since ${since} (${ui.unavailable})`;
}

async function refreshStats() {
  let stats;
  const arrived = ui.arrived;  // the ids told before the ask, which its counts hold
  // Answers are taken in the order they were asked: a slow answer overtaken by a later
  // ask's is stale (a 200 asked before the disk failed, arriving after the 503 asked
  // since, called statusd fine again and hid the trouble until the next refresh).
  const asked = ++ui.statsAsked;
  try {
    // partial=1: while statusd cannot read the processors' state (a status file it may
    // not open), the counts all the same, with the cause instead of the processors'
    // fields; asked without it, the 503 left the counts as last seen all the while.
    stats = await getJSON("api/v1/stats?partial=1");
  } catch (err) {
    if (asked < ui.statsTaken) throw err;
    ui.statsTaken = asked;
    reachable(err);
    throw err;
  }
  if (asked < ui.statsTaken) return;
  ui.statsTaken = asked;
  reachable(null);
  let total = 0;
  for (const [state, count] of Object.entries(stats.counts)) {
    const node = $(`count-${state}`);
    if (node) node.textContent = COUNT_FORMAT.format(count);
    total += count;
  }
  ui.counts = { counts: stats.counts, byTool: stats.counts_by_tool || null };
  showMatched();
  // Jobs left the spool (a purge), which no event announces: reload the list so their rows
  // go.  statusd counts them (its removed); a fall of the total is the sign where it does
  // not say (a transition never lowers the total).  The total alone missed a purge that
  // came with as many new drops between two refreshes: the purged rows stayed.
  const removed = stats.statusd && Number.isInteger(stats.statusd.removed)
    ? stats.statusd.removed : null;
  const purged = (ui.removed !== null && removed !== null && removed !== ui.removed)
    || (ui.total !== null && total < ui.total);
  ui.removed = removed;
  if (purged) loadList(true).catch(() => {});
  // Or fewer than before and the new ones told since: the open ended task may be one (a
  // purge with as many drops left the total as it was).  A new job told after the counts
  // held it makes one look too many, which costs a HEAD, not a reload of the list.
  // Told since the last counts taken were asked (each ask took its own snapshot off the
  // count before: two asks in flight took the same new ids off twice).
  const told = arrived - ui.arrivedTaken;
  ui.arrivedTaken = arrived;
  if (purged || (ui.total !== null && total < ui.total + told)) {
    checkEndedTask().catch(() => {});
  }
  ui.total = total;
  if (typeof stats.processors_unknown === "string") {
    // statusd answers; only whether a processor is alive is unknown, maybe for good.
    // Called "statusd unavailable", each message of the open task's live stream took it
    // back and the next stats said it again: the note flickered beside a running
    // backtest, its "since" always the last refresh.
    showUnknownProcessor(stats.processors_unknown);
  } else {
    ui.processorsUnknown = null;
    showProcessor(stats);
    noteProcessors(stats.processors || []);
    $("workers").textContent = stats.job_num
      ? `workers ${stats.busy_workers}/${stats.job_num}` : "";
  }
  // Its parts wrap between them on a phone, never inside one.
  const oldest = fmtOldest(stats.oldest_pending_age_s, stats.oldest_due_pending_age_s);
  $("oldest").replaceChildren(
    ...oldest.flatMap((part, n) => [n ? ", " : "", el("span", {}, part)]));
  ui.tools = Array.isArray(stats.tools) ? stats.tools : [];
  updateToolOptions();
  renderNote();
}

function noteProcessors(processors) {
  // Their tools' attempt limits, asked again only when other processors run (a restart
  // may load other tools): "attempts 1 of 3" of a job that sets no max_attempts, as
  // `spoolq show` says it; the page said "attempts 1" of a job with two retries to go.
  const key = processors.map((p) => `${p.owner} ${p.started_at}`).join(",");
  if (key === ui.toolsOf) return;
  ui.toolsOf = key;
  // An answer of processors since replaced is not taken: come after the one asked for the
  // restarted ones, it said the old limits until the processors changed again.
  getJSON("api/v1/tools").then((catalogue) => {
    if (ui.toolsOf !== key) return;
    ui.toolLimits = new Map(catalogue.tools
      .filter((tool) => Number.isInteger(tool.max_attempts))
      .map((tool) => [tool.name, tool.max_attempts]));
    if (ui.fieldsOf) showAttempts(ui.fieldsOf);
  }).catch(() => {
    if (ui.toolsOf === key) ui.toolsOf = null;  // asked again at the next refresh
  });
}

function attemptsText(record) {
  // The job's own limit, else its tool's at the live processors (none running: not known).
  const limit = record.max_attempts || ui.toolLimits.get(record.tool);
  return `${record.attempts ?? 0}${limit ? ` of ${limit}` : ""}`;
}

function showAttempts(record) {
  const node = document.querySelector('#task-fields dd[data-field="attempts"]');
  if (node) node.textContent = attemptsText(record);
}

function fmtAge(age) {
  return age < 60 ? `${age.toFixed(0)} s` : fmtSpan(age);
}

function fmtOldest(age, due) {
  // As `spoolq stats` says it: a job waiting for its not_before (a retry's backoff, a
  // job for tonight) is no late one.  The page said "oldest pending 2 h 0 min" of 20 jobs
  // due tonight, beside idle workers, as if the queue were stuck.
  if (age === null || age === undefined) return [];
  const parts = [`oldest pending ${fmtAge(age)}`];
  if (due === null) parts.push("none due yet");
  else if (due !== undefined && due < age - 1) parts.push(`oldest due for ${fmtAge(due)}`);
  return parts;
}

function showUnknownProcessor(why) {
  ui.processorsUnknown = why;
  ui.processorAlive = null;
  const node = $("processor");
  node.textContent = "processor: ?";
  node.className = "state";
  node.title = `processor liveness unknown (${why})`;
  processorNote(node.title);
  $("workers").textContent = "";
  renderNote();
}

function processorNote(text) {
  // What the processor's status means beyond its one word, as text beside it: in its
  // tooltip only, a keyboard, a touch screen and a screen reader never had it (why its
  // liveness is unknown, when a stop's grace ends and what runs is requeued).
  const note = $("processor-note");
  note.hidden = !text;
  note.textContent = text;
}

function showProcessor(stats) {
  // "stopping" when every live processor is in its stop grace: it claims nothing more,
  // and what it runs is requeued when the grace ends.
  const node = $("processor");
  const alive = stats.processor.alive;
  ui.processorAlive = alive;
  ui.processors = stats.processors || [];
  ui.leftWhy = stats.left_why || {};
  const live = (stats.processors || []).filter((p) => p.alive !== false);
  const stopping = alive && live.length > 0 && live.every((p) => p.stopping);
  node.textContent = `processor: ${stopping ? "stopping" : alive ? "up" : "down"}`;
  node.className = `state ${stopping ? "pending" : alive ? "done" : "failed"}`;
  const ends = live.map((p) => p.grace_ends_at).filter(Boolean).sort()[0];
  node.title = stopping ? `asked to stop: it starts nothing more; what runs is requeued ${
    ends ? `at ${fmtTime(ends)}` : "when its grace ends"}` : "processor liveness";
  processorNote(stopping ? node.title : "");
}

function scheduleStats() {
  // After a transition: the counts at once, and the workers again after the processor's
  // next heartbeat (one a second), which is when it says a claimed job's worker is busy
  // ("workers 0/2" stood beside a running backtest until the next refresh, 5 s on).
  if (!ui.statsTimer) {
    ui.statsTimer = setTimeout(() => {
      ui.statsTimer = null;
      refreshStats().catch(() => {});
    }, 200);
  }
  if (!ui.statsLater) {
    ui.statsLater = setTimeout(() => {
      ui.statsLater = null;
      refreshStats().catch(() => {});
    }, HEARTBEAT_MS + 300);
  }
}

function updateToolOptions() {
  // The tools the last stats named (those the live processors offer, and those of jobs in
  // the spool: at most 256 of these, statusd's bound), and the one filtered on.  Options
  // were only ever added: a page open for days offered every tool it had seen, long purged
  // (four rounds of 100 made-up names, each purged: 400 options, statusd naming none; QA
  // h409).  The one filtered on stays, so the select says the filter in force.
  const select = $("tool-filter");
  const keep = new Set(ui.tools);
  if (ui.filter.tool) keep.add(ui.filter.tool);
  for (const option of [...select.options]) {
    if (option.value && !keep.has(option.value)) option.remove();
  }
  const have = new Set([...select.options].map((o) => o.value));
  for (const tool of keep) {
    if (!have.has(tool)) select.appendChild(el("option", { value: tool }, shown(tool)));
  }
}

/* ---- the task list ------------------------------------------------------------------ */

// An ISO 8601 time's fraction of a second, which Date.parse keeps only to the millisecond.
const FRACTION = /\.(\d+)/;

function sortKey(record) {
  // statusd's order (newest first: submitted_at, then id) for a row that comes live: its
  // key's time is spool.cursor's micros(), int(timestamp() * 1_000_000) of Python doubles,
  // reckoned here in the same doubles (whole microseconds are exact in one up to 2255).
  // By the millisecond, two jobs submitted within one stood in the other order until a
  // reload; by the exact microsecond, two of after 2038 that statusd's doubles make one
  // key (then by id) would have.
  const text = record.submitted_at || "";
  const fraction = FRACTION.exec(text);
  const ms = Date.parse(text.replace(FRACTION, ""));  // whole seconds: exact
  const micros = Number.isNaN(ms) ? 0 : Math.trunc(
    (ms * 1000 + Number((fraction ? fraction[1] : "").slice(0, 6).padEnd(6, "0"))) / 1e6 * 1e6);
  return [micros, record.id];
}

function newer(a, b) {
  return a[0] !== b[0] ? a[0] > b[0] : a[1] > b[1];
}

function matches(record) {
  return (!ui.filter.state || record.state === ui.filter.state)
    && (!ui.filter.tool || record.tool === ui.filter.tool);
}

function pct(fraction) {
  // A running job's percent (nothing else shows one), whole and rounded down: 0.996 read
  // "100%" while the job still ran.  At most 99%, as `spoolq wait`'s bar: the quant tools
  // report 1.0 when their work is over, and the record of a 100 MB result then takes
  // 1 to 3 s to be written.  (The 1e-9: 0.29 * 100 is 28.999999999999996.)
  return `${Math.min(99, Math.floor(fraction * 100 + 1e-9))}%`;
}

function fillWidth(fraction) {
  // A running job's bar, filled as far as its percent says: a full bar beside "99%" read
  // as done for the seconds a large result's record takes to be written (QA h392).
  return `${(Math.min(fraction, 0.99) * 100).toFixed(1)}%`;
}

function progressCell(progress) {
  const td = el("td", { class: "progress-cell" });
  if (!progress) return td;
  const fraction = progress.fraction;
  if (fraction !== null && fraction !== undefined) {
    const bar = el("span", { class: "bar" });
    const fill = el("span", { class: "fill" });
    fill.style.display = "block";
    fill.style.width = fillWidth(fraction);
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(document.createTextNode(` ${pct(fraction)}`));
  }
  if (progress.message) showMessage(td, progress.message);
  return td;
}

function showMessage(td, message) {
  // A row's message on the row, cut to two lines by app.css: it was in a tooltip only,
  // which a keyboard, a touch screen and a screen reader never show.  Its whole text is
  // the cell's (a screen reader reads it all), its tooltip's and in the task view.
  const text = shown(message);
  td.appendChild(document.createTextNode(" "));
  td.appendChild(el("span", { class: "message" }, text));
  td.title = text;
}

function messageCell(record) {
  // The progress column: a running row's progress, a failed row's error message.
  if (record.state === "running") return progressCell(record.progress);
  const td = el("td", { class: "progress-cell" });
  const error = record.state === "failed" ? record.error : null;
  if (error && error.message) {
    // A brief row keeps a long message's first 1,000 characters (error_cut, which a
    // traceback sets too): "…" says it was cut.
    const message = String(error.message);
    const cut = message.length > 1000 || (record.error_cut && message.length === 1000);
    showMessage(td, cut ? `${message.slice(0, 1000)}…` : message);
  }
  return td;
}

function stateCell(record) {
  // A failed row says why, as `spoolq ls` does: the error's type (its message beside it).
  const td = el("td", { class: `state ${record.state}` }, record.state);
  const error = record.state === "failed" ? record.error : null;
  if (error) {
    td.appendChild(document.createTextNode(" "));
    td.appendChild(el("small", { class: "why" }, shown(error.type)));
    td.title = shown(`${error.type}: ${String(error.message).slice(0, 1000)}`);
  }
  return td;
}

function rowFor(record) {
  const tr = el("tr", { "data-id": record.id, "data-state": record.state });
  const idCell = el("td", { class: "id" });
  idCell.appendChild(el("a", { href: `#/tasks/${encodeURIComponent(record.id)}` }, record.id));
  tr.appendChild(idCell);
  tr.appendChild(el("td", { class: "tool" }, shown(record.tool || "")));
  tr.appendChild(stateCell(record));
  tr.appendChild(messageCell(record));
  tr.appendChild(el("td", { class: "submitted" }, fmtTime(record.submitted_at)));
  const since = record.state === "running" ? runningSince(record) : null;
  tr.appendChild(since ? el("td", { class: "duration", "data-since": since }, fmtSince(since))
    : el("td", { class: "duration" }, fmtDuration(record.duration_s)));
  return tr;
}

function showEmpty() {
  $("empty").hidden = ui.rows.size > 0;
}

function appendRows(records) {
  const tbody = $("tasks").tBodies[0];
  for (const record of records) {
    if (ui.rows.has(record.id)) continue;
    const tr = rowFor(record);
    ui.rows.set(record.id, { tr, key: sortKey(record), record });
    tbody.appendChild(tr);
  }
  showEmpty();
}

function upsert(record) {
  const existing = ui.rows.get(record.id);
  if (!matches(record)) {
    if (existing) {
      existing.tr.remove();
      ui.rows.delete(record.id);
      showEmpty();
    }
    return;
  }
  const key = sortKey(record);
  const tr = rowFor(record);
  tr.classList.add("flash");
  if (existing && existing.key[0] === key[0]) {
    if (existing.tr.dataset.after) tr.dataset.after = existing.tr.dataset.after;
    existing.tr.replaceWith(tr);
    ui.rows.set(record.id, { tr, key, record });
    return;
  }
  if (existing) {
    existing.tr.remove();
    ui.rows.delete(record.id);
  }
  const tbody = $("tasks").tBodies[0];
  const before = firstOlderRow(tbody.rows, key);
  if (!before && (ui.cursor || ui.trimmed) && tbody.rows.length) return; // a later page's
  tbody.insertBefore(tr, before);
  ui.rows.set(record.id, { tr, key, record });
  trimRows(tbody);
  showEmpty();
}

function trimRows(tbody) {
  // A page open on a busy spool would otherwise grow by a row for every job, for good.
  // It keeps as many as the reader paged to with "older tasks", if more: those rows went at
  // the next new job, and on a busy spool no click got past the 1,000th.
  if (tbody.rows.length <= ui.keep || ui.paging) return;
  const dropLast = () => {
    const last = tbody.rows[tbody.rows.length - 1];
    ui.rows.delete(last.dataset.id);
    last.remove();
  };
  while (tbody.rows.length > ui.keep) dropLast();
  $("more").hidden = false;
  // The next page starts after the end of a page kept (rows past the API's largest page
  // cannot be asked for again in one page); else its cursor is asked for when it is needed.
  let end = tbody.rows.length - 1;
  while (end >= 0 && !tbody.rows[end].dataset.after) end -= 1;
  if (end >= 0 && tbody.rows.length > MAX_ROWS) {
    while (tbody.rows.length > end + 1) dropLast();
    ui.cursor = tbody.rows[end].dataset.after;
    ui.trimmed = false;
    return;
  }
  while (tbody.rows.length > MAX_ROWS) dropLast();  // none: so many new jobs came since
  ui.keep = MAX_ROWS;
  ui.trimmed = true;
  ui.cursor = null;
}

function markPageEnd(cursor) {
  // The last row of a page says the cursor after it (see trimRows).
  const rows = $("tasks").tBodies[0].rows;
  if (cursor && rows.length) rows[rows.length - 1].dataset.after = cursor;
}

function firstOlderRow(rows, key) {
  // The rows are newest first: a binary search, so a burst of thousands of new jobs
  // costs n log n, not n² (a scan per insert froze the page for seconds).
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (newer(key, ui.rows.get(rows[mid].dataset.id).key)) hi = mid;
    else lo = mid + 1;
  }
  return lo < rows.length ? rows[lo] : null;
}

function updateProgress(msg) {
  const entry = ui.rows.get(msg.id);
  if (!entry) return;
  const cell = entry.tr.querySelector(".progress-cell");
  if (cell) cell.replaceWith(progressCell(msg.progress));
}

function listUrl(cursor, limit = PAGE_SIZE) {
  // Brief rows: a large job's params and result are not in its row (50 pending jobs with
  // 1 MiB params made a 50 MB page); the task view reads the whole record.
  const params = new URLSearchParams({ limit: String(limit), view: "brief" });
  if (ui.filter.state) params.set("state", ui.filter.state);
  if (ui.filter.tool) params.set("tool", ui.filter.tool);
  if (cursor) params.set("cursor", cursor);
  return `api/v1/tasks?${params}`;
}

function listError(err) {
  // A list that could not load says why (the rows shown, if any, are as they were).  A
  // statusd that has just started and loads its index says so, and how far: no error,
  // the list comes once the index is in (asked again meanwhile).
  const node = $("list-error");
  node.hidden = !err;
  ui.indexing = Boolean(err && err.type === "indexing");
  node.className = ui.indexing ? "muted" : "error";
  if (!err) return;
  node.textContent = shown(ui.indexing
    ? indexingText(err, "the list shows once it is done")
    : `cannot load the list: ${err.message}`);
}

function indexingText(err, then) {
  // An "indexing" 503's message (how far the load is), and what the page does meanwhile.
  return `${err.detail.replace(/; try again$/, "")}: ${then}`;
}

async function loadList(again = false) {
  // again: the list shown read anew (its events socket back after a drop, a purge): as
  // many rows as it shows, up to the API's largest page.  Read as its first page, the
  // rows a reader had paged to with "older tasks" went at every restart of statusd.
  const seq = ++ui.listSeq;
  const during = [];
  ui.during = during;
  const limit = again ? Math.min(MAX_ROWS, Math.max(PAGE_SIZE, ui.rows.size)) : PAGE_SIZE;
  let page;
  try {
    page = await getJSON(listUrl(null, limit));
  } catch (err) {
    if (seq !== ui.listSeq) return;
    ui.during = null;
    listError(err);
    // A refusal of the ask itself (a link's tool of 200 characters: "tool is at most 128")
    // is said, and not asked again every 2 s for as long as the page is open.  No row is
    // shown under it: those of the list before stayed, for good, as if of this filter.
    if (err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
      ui.rows.clear();
      ui.trimmed = false;
      ui.keep = MAX_ROWS;
      ui.cursor = null;
      $("tasks").tBodies[0].replaceChildren();
      $("more").hidden = true;
      return;
    }
    setTimeout(() => { if (seq === ui.listSeq) loadList(again).catch(() => {}); }, RETRY_MS);
    return;
  }
  if (seq !== ui.listSeq) return; // a newer load (filter change) won
  ui.during = null;
  const indexed = ui.indexing;
  listError(null);
  // The index is in: the live updates at once, not at the events socket's next try (its
  // handshakes were refused while the index loaded, and its backoff had grown meanwhile).
  if (indexed) reconnectEvents();
  ui.rows.clear();
  ui.trimmed = false;
  ui.keep = MAX_ROWS;
  $("tasks").tBodies[0].replaceChildren();
  appendRows(page.tasks);
  markPageEnd(page.next_cursor);
  // What moved while the page was on its way is newer than the page: apply it again.
  for (const record of during) upsert(record);
  ui.cursor = page.next_cursor;
  $("more").hidden = !ui.cursor;
}

async function loadMore() {
  // No row is let go while the page is on its way (see trimRows): new jobs let the last
  // rows go, and the page came in after the rows kept, those let go missing between for good.
  if ((!ui.cursor && !ui.trimmed) || ui.paging) return;
  ui.paging = true;
  const tbody = $("tasks").tBodies[0];
  const last = tbody.rows[tbody.rows.length - 1] || null;
  try {
    await loadPageAfter();
  } finally {
    ui.paging = false;
    trimRows(tbody);
  }
  // The last page in, its button goes: the keyboard that pressed it was sent to the
  // page's top, a Tab walk of the whole list back to where it read (QA h392).  It goes
  // on at the first row the page brought.
  const more = $("more");
  if (more.hidden && (document.activeElement === more || document.activeElement === document.body)
      && last && last.isConnected) {
    const first = last.nextElementSibling;
    const link = first && first.querySelector("a");
    if (link) link.focus();
  }
}

async function loadPageAfter() {
  const seq = ui.listSeq;
  let cursor = ui.cursor;
  if (!cursor) {
    // Rows were let go: the cursor after the last one kept is that of a page as long as the
    // list (a job that arrived since only repeats a row; none is skipped).
    cursor = (await getJSON(listUrl(null, ui.rows.size))).next_cursor;
    if (seq !== ui.listSeq) return;
    ui.trimmed = false;
    ui.cursor = cursor;
    if (!cursor) {
      $("more").hidden = true;
      return;
    }
  }
  // What moves meanwhile of a row not shown (upsert leaves a later page's rows to it) may be
  // a row of this page, which it brings as it was when asked: told again once it is in.  The
  // page's row of a job done while it came said "running", its time counting on, for good.
  const late = new Map();
  ui.pageLate = late;
  let page;
  try {
    page = await getJSON(listUrl(cursor));
  } finally {
    if (ui.pageLate === late) ui.pageLate = null;
  }
  if (seq !== ui.listSeq) return; // the list was loaded again (a filter change): not its page
  listError(null);
  appendRows(page.tasks);
  markPageEnd(page.next_cursor);
  ui.keep = Math.max(ui.keep, ui.rows.size);
  ui.cursor = page.next_cursor;
  $("more").hidden = !ui.cursor;
  // After the cursor: a row older than the last page's end goes after it, not to a next page.
  for (const record of late.values()) upsert(record);
}

function notePageLate(record) {
  // The latest move of each row not shown while a page of "older tasks" comes (see
  // loadPageAfter); a row shown has it already, and the page's of it is not added.
  if (ui.rows.has(record.id)) ui.pageLate.delete(record.id);
  else ui.pageLate.set(record.id, record);
}

/* ---- the events socket ------------------------------------------------------------- */

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = on ? "on" : "off";
}

function connectEvents() {
  // Brief rows, as the list's pages: 1 MB params were sent at each move of their job.
  const socket = new WebSocket(wsUrl("api/v1/ws/events?progress=1&view=brief"));
  ui.events = socket;
  socket.onopen = () => {
    ui.eventsDelay = 500;
    setLive(true);
    loadList(true).catch(() => {});
    refreshStats().catch(() => {});
  };
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.event === "transition" && msg.inferred) {
      // A move too fast for statusd to see, told before the one it saw (no record).
      if (msg.previous === null) ui.arrived += 1;
      sawTransition(msg, null);
    } else if (msg.event === "transition" && msg.record) {
      // Its record may be the one the open task's view draws (its end told after the task
      // stream's, which closed): exact, as that stream's.
      withExactIntegers(msg.record, event.data, (value) => value.record);
      if (msg.previous === null) ui.arrived += 1;
      if (ui.during) ui.during.push(msg.record);
      upsert(msg.record);
      if (ui.pageLate) notePageLate(msg.record);
      sawTransition(msg, msg.record);
      taskMoved(msg.record);
      scheduleStats();
    } else if (msg.event === "progress") {
      updateProgress(msg);
    }
  };
  socket.onclose = () => {
    setLive(false);
    if (ui.events !== socket) return;
    // Without live updates (statusd away, a proxy that passes no WebSocket) the list is
    // fetched at each try to reconnect, and the counts: they show, and stay roughly current.
    loadList(true).catch(() => {});
    refreshStats().catch(() => {});
    ui.eventsLater = setTimeout(() => {
      ui.eventsLater = null;
      connectEvents();
    }, ui.eventsDelay);
    ui.eventsDelay = Math.min(ui.eventsDelay * 2, 10000);
  };
}

function reconnectEvents() {
  // statusd answers again: its events at once, not when the backoff's next try comes (the
  // list said "offline", its rows still, for up to 10 s beside the task read afresh).
  if (ui.eventsLater === null) return;
  clearTimeout(ui.eventsLater);
  ui.eventsLater = null;
  connectEvents();
}

/* ---- the task view ---------------------------------------------------------------- */

function shortResult(result) {
  // Equity curves are drawn, not printed: show their length instead.
  return JSON.stringify(result, (key, value) => (
    key === "equity_curve" && Array.isArray(value) ? `[${value.length} points]` : value
  ), 2);
}

function showText(box, text, id) {
  // A result of megabytes printed whole froze the page for half a minute (the layout of
  // one huge text node): its start is printed, and the whole record is a link away.
  const cut = box.querySelector(".cut");
  box.querySelector("pre").hidden = false;  // hidden for a record too large to load
  cut.hidden = text.length <= MAX_SHOWN_CHARS;
  box.querySelector("pre").textContent = cut.hidden ? text : `${text.slice(0, MAX_SHOWN_CHARS)}…`;
  if (cut.hidden) return;
  const whole = wholeRecordLink(id);
  cut.replaceChildren(`the first ${MAX_SHOWN_CHARS.toLocaleString("en")} of `
    + `${text.length.toLocaleString("en")} characters; `, whole, " (JSON)");
}

function renderFields(record) {
  const dl = $("task-fields");
  dl.replaceChildren();
  ui.fieldsOf = record;
  const source = record.source;  // the file kept in failed/<id>.orig (a quarantined drop, an unknown tool), by its name
  const rows = [
    ["tool", shown(record.tool || "")], ["attempts", attemptsText(record)],
    ["timeout", record.timeout ? `${record.timeout} s` : ""],
    ["submitted", fmtTime(record.submitted_at)], ["not before", fmtTime(record.not_before)],
    // A retry's backoff is its error's, never shown as the client's not_before.
    ["backoff until", record.state !== "failed" && record.error ? fmtTime(record.error.retry_at) : ""],
    ["started", fmtTime(record.started_at)],
    ["finished", fmtTime(record.finished_at)], ["duration", fmtDuration(record.duration_s)],
    // A running job's pid is its processor's, never to be taken for the job's own; an
    // ended one's is the process its tool ran in (a worker's): both were "pid" (h392).  One
    // that never started (cancelled while pending, a drop quarantined) ran nowhere: its pid
    // wrote the record (statusd's, `spoolq cancel`'s, the processor's: h397), as does an
    // abandoned one's: the recovery of a processor started since, which never ran it (h408).
    ["host", record.host ? `${record.host}${record.pid == null ? ""
      : ` (${record.state === "running" ? "processor pid"
        : record.started_at && !(record.error && record.error.type === "abandoned") ? "ran in pid"
        : "written by pid"} ${record.pid})`}` : ""],
    ["priority", record.priority],
    ["source", source ? shown(`${source.name} (${source.kind}${source.size == null ? "" : `, ${source.size} bytes`})`) : ""],
  ];
  for (const [name, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    dl.appendChild(el("dt", {}, name));
    dl.appendChild(el("dd", { "data-field": name }, value));
    const since = name === "started" && record.state === "running" ? runningSince(record) : null;
    if (since) {
      dl.appendChild(el("dt", {}, "running for"));
      dl.appendChild(el("dd", { "data-field": "running for", "data-since": since }, fmtSince(since)));
    }
  }
}

function renderProgress(state, progress) {
  // A progress file without a fraction or a message only says where the run is (the
  // processor writes one a second into a run that has reported nothing): no bar.
  const box = $("task-progress");
  box.hidden = state !== "running" || !progress
    || ((progress.fraction === null || progress.fraction === undefined) && !progress.message);
  ui.shownPercent = box.hidden || progress.fraction === null || progress.fraction === undefined
    ? "" : pct(progress.fraction);
  if (box.hidden) return;
  const fraction = progress.fraction ?? 0;
  box.querySelector(".fill").style.width = fillWidth(fraction);
  const done = progress.fraction === null || progress.fraction === undefined
    ? "" : `${pct(fraction)} `;
  box.querySelector(".text").textContent = `${done}${shown(progress.message || "")}`;
  const eta = box.querySelector(".eta");
  const until = finishesAt(progress);
  if (until === null) {
    delete eta.dataset.until;
    eta.textContent = "";
  } else {
    eta.dataset.until = until;
    eta.textContent = fmtLeft(until);
  }
}

// A run's end as its progress so far points to (a straight line from its start through
// its latest report), once that says enough: at 2% or more, a second or more in.
const ETA_MIN_FRACTION = 0.02;
const ETA_MIN_SECONDS = 1;

function finishesAt(progress) {
  // A record's progress has its times; a progress event has none: the run's start is
  // the view's, and the report is as of now, when it came.
  const fraction = progress.fraction;
  const started = Date.parse(progress.started_at || ui.runSince || "");
  const updated = progress.updated_at ? Date.parse(progress.updated_at) : serverNow();
  if (typeof fraction !== "number" || fraction < ETA_MIN_FRACTION || fraction >= 1
      || Number.isNaN(started) || Number.isNaN(updated)) return null;
  const spent = (updated - started) / 1000;
  if (spent < ETA_MIN_SECONDS) return null;
  return updated + spent * (1 - fraction) / fraction * 1000;
}

function fmtLeft(until) {
  // Counted down by statusd's clock as this browser reckons it (see noteServerClock).
  // None while no processor runs: "about 1 s left" went on beside the note that the job
  // makes no progress until one starts (QA).  Nor while statusd does not answer: the run
  // is as last seen, and its time left went on counting down beside that note.
  if (ui.processorAlive === false || ui.unreachable !== null) return "";
  const left = Math.round((until - serverNow()) / 1000);
  if (left <= 0) return "about to finish, at its pace so far";
  return `about ${left < 60 ? `${left} s` : fmtSpan(left)} left`;
}

function getRecord(id) {
  return getJSON(taskUrl(id), MAX_RECORD_BYTES,
    (text) => withExactIntegers(JSON.parse(text), text, (value) => value));
}

function showLoading(text = "loading the result…") {
  // Said while a large record comes (a backtest's of 170 MB took seconds).
  const box = $("task-result");
  box.hidden = false;
  box.querySelector("pre").hidden = true;
  const cut = box.querySelector(".cut");
  cut.hidden = false;
  cut.textContent = shown(text);
}

function showTooLarge(record, size) {
  // The record without its result (a stream's or the list's), and where the whole one is.
  renderError(record);
  $("task-chart").hidden = true;
  const box = $("task-result");
  box.hidden = false;
  box.querySelector("pre").hidden = true;
  const cut = box.querySelector(".cut");
  cut.hidden = false;
  const whole = wholeRecordLink(record.id);
  cut.replaceChildren(`the record is ${(size / 1048576).toFixed(0)} MiB, too large to show `
    + "here: ", whole, " (JSON)");
  renderJob(record);
}

function renderJob(record) {
  // What was asked (a brief row of a large job has no params: nothing to show then).
  const box = $("task-params");
  box.hidden = Boolean(record.params_omitted || record.meta_omitted);
  const job = { tool: record.tool, params: shownField(record, "params"),
    meta: shownField(record, "meta") };
  // Cut as a result is: a job of 1 MB (SPOOL_MAX_JOB_BYTES) with many small values printed
  // as 1.9 million characters on 150,000 lines, and opening "job" froze the page for 4 s.
  if (!box.hidden) showText(box, shown(JSON.stringify(job, null, 2)), record.id);
}

function renderNote() {
  // What the task's fields can't say, watching it for minutes: that statusd is away (the
  // view is as last seen), that no processor runs (a "running" job whose bar stays put
  // after a SIGKILL), that it was requeued (a stop's requeue, its run from 0% again, left
  // no trace but "attempts 0"), or what "not found" may mean.
  const node = $("task-note");
  const state = ui.taskId === null ? "" : $("task-state").textContent;
  const lines = [];
  if (ui.indexingNote !== null && ui.taskId !== null) lines.push(ui.indexingNote);
  if (ui.unreachable !== null) {
    lines.push(`${away()}: the task as last seen; trying again`);
  } else if (state === "running" && stalledProcessor(ui.fieldsOf)) {
    // A hung processor (SIGSTOP, a stuck disk) holds its lock: no other takes its job,
    // and "until one starts, and requeues it" was wrong advice (QA).
    lines.push(`${hungText(stalledProcessor(ui.fieldsOf))}; it still holds its lock, so no `
      + "other processor takes this job until it ends");
  } else if (state === "running" && ui.processorAlive === false) {
    lines.push("no processor is running: this job makes no progress until one starts, "
      + "and requeues it");
  } else if (state === "pending" && ui.processorAlive === false) {
    // The question a researcher asks first ("why hasn't it started?"), said only by the
    // header's small "processor: down" (QA).
    const hung = ui.processors.find((p) => p.alive === false);
    lines.push(hung ? `no processor is live: ${hungText(hung, "the processor")}; this job `
      + "waits until one is"
      : "no processor is running: this job waits until one starts");
  } else if ((state === "running" || state === "pending") && ui.processorsUnknown !== null) {
    lines.push(`whether a processor is running cannot be told (${ui.processorsUnknown})`);
  } else if (state === "pending" && leftBy(ui.fieldsOf).length) {
    // A rolling upgrade: a processor that does not load the job's tool leaves it to one
    // that does.  Said "pending" alone beside idle workers, it looked stuck.  Why, as
    // `spoolq show` says it (the stats' left_why): it was "left to the processors that
    // offer tool X" too while none did, a processor starting or the tool's restart grace
    // alone keeping it, after which it fails unknown_tool (QA h418).
    const tool = String(ui.fieldsOf.tool);
    const leaving = leftBy(ui.fieldsOf);
    lines.push(Object.hasOwn(ui.leftWhy, tool) ? shown(String(ui.leftWhy[tool]))
      : `left to the processors that offer tool ${shown(tool)}: ${
        leaving.map((p) => `pid ${p.pid} on ${shown(String(p.host))}`).join(", ")
      } ${leaving.length === 1 ? "does" : "do"} not load it`);
  }
  if (state === "not found" && ui.fieldsOf) {
    // Seen here before it went: "not submitted yet" beside its fields and result, still
    // drawn, could not be so (QA h409).
    lines.push("its record was purged from the spool (or its drop withdrawn): shown as "
      + "last seen here; it shows anew if submitted again");
  } else if (state === "not found") {
    lines.push("no task with this id in the spool: not submitted yet, or its record was "
      + "purged; it shows here once submitted");
  } else if (state === "invalid id") {
    lines.push("no task can have this id (letters, digits and ._-, at most 128, starting "
      + "with a letter or digit): is the link cut short, or run into the text after it?");
  } else if (ui.requeued) {
    // Once the job has ended, the run cut short is history: a failed job "runs again" no
    // more (it said so of a job failed for good).
    lines.push(`requeued at ${fmtTime(ui.requeued.at)}: its run was cut short (${
      ui.requeued.why}) and ${TERMINAL.has(state) ? "it ran" : "runs"} again from the start`);
  }
  node.hidden = lines.length === 0;
  node.replaceChildren(...lines.flatMap((line, n) => (n ? [el("br"), line] : [line])));
  showTitle();
}

function leftBy(record) {
  // The live processors that leave this pending job to the others that offer its tool
  // (their status files' left_to_others, by tool).
  if (!record || typeof record.tool !== "string") return [];
  return ui.processors.filter((p) => p.alive !== false && p.left_to_others
    && Object.hasOwn(p.left_to_others, record.tool));
}

function stalledProcessor(record) {
  // The running job's own processor, when it holds its lock but sends no heartbeat:
  // by the owner its progress names, else by host and pid, which processors in
  // containers share (two "box", pid 1: a live one's job was said to be a hung one's).
  if (!record || record.state !== "running") return undefined;
  const owner = record.progress && record.progress.owner;
  const its = ui.processors.filter((p) => (owner ? p.owner === owner
    : p.host === record.host && p.pid === record.pid));
  return its.some((p) => p.alive !== false) ? undefined : its[0];
}

function hungText(processor, whose = "its processor") {
  return `${whose} (pid ${processor.pid} on ${shown(String(processor.host))}) has sent no `
    + `heartbeat since ${fmtTime(processor.heartbeat_at)}: hung or stopped`;
}

function showTitle() {
  // The tab's title says what the view shows: the task, its state and progress ("bt-7
  // running 42% · spoolq"), or the list's filter.  Every view was "spoolq": tabs of three
  // backtests, and the browser's history, could not be told apart.
  const parts = ui.taskId !== null
    ? [shown(ui.taskId).slice(0, 128), $("task-state").textContent,
      $("task-state").textContent === "running" ? ui.shownPercent : ""]
    : [ui.filter.state, shown(ui.filter.tool)];
  const what = parts.filter(Boolean).join(" ");
  document.title = what ? `${what} \u00b7 spoolq` : "spoolq";
}

function sawTransition(msg, record) {
  // From either stream.  A claim is a live processor's: the "processor: down" of the last
  // stats (one just started) holds no more, and no "no processor" note flashes beside the
  // job it claimed.  running -> pending of the open task: its run was cut short (a stop's
  // requeue, a dead processor's, a retried timeout or crash), the next starts from 0%.
  // Why: a stop's requeue does not count the run (its attempts go back), and its record
  // keeps the error of an earlier retry, which is not why this run ended ("cut short
  // (timeout)" of a run a stop cut short 2 s in).  A retry or a re-drop of an ended job
  // runs it anew: a requeue of an earlier run is no news of it.
  if (msg.event !== "transition") return;
  if (msg.state === "running" && ui.processorAlive === false) showClaimed();
  if (msg.id !== ui.taskId) return;
  if (ui.actionSaidAt !== null && msg.state !== ui.actionSaidAt) {
    ui.actionSaidAt = null;
    sayAction("");
  }
  if (TERMINAL.has(msg.previous) && !TERMINAL.has(msg.state)) ui.requeued = null;
  // running -> running: claimed again before statusd saw it pending (another processor
  // took a stopping one's requeue at once); its claim raised the attempts once more.
  if (record && msg.previous === "running"
      && (msg.state === "pending" || msg.state === "running")) {
    const error = record && record.error;
    const queued = (record.attempts ?? 0) - (msg.state === "running" ? 1 : 0);
    const uncounted = ui.runAttempts !== null && queued < ui.runAttempts;
    ui.requeued = { at: new Date(),
      why: error && !uncounted ? shown(error.type) : "its processor stopped" };
  }
  if (msg.state === "running" && record) ui.runAttempts = record.attempts ?? 0;
  renderNote();
}

function showClaimed() {
  // The header too: it said "processor: down" beside the job claimed, until the next
  // stats (a second on: they are read again after the processor's heartbeat).  A claim
  // says one processor is up and claims: not stopping.
  showProcessor({ processor: { alive: true }, processors: [] });
}

function setTaskState(text) {
  // The task's state, a polite live region (index.html): written only when it changes, so
  // a screen reader says "done" when the task ends, not "running" again at each progress
  // report (a write of the same text replaces the text, which is a change to the region).
  const node = $("task-state");
  if (node.textContent !== text) node.textContent = text;
}

function renderHead(record) {
  ui.heads += 1;
  if (ui.readRefused) {
    // "cannot load the task" is history once the task is drawn: a record without its
    // whole (an event's) drew no error box, and the refused read's stood beside "done"
    // when that whole record was then gone (a 404: h362).
    ui.readRefused = false;
    $("task-error").hidden = true;
  }
  if (record.state === "running") ui.runAttempts = record.attempts ?? 0;
  ui.runSince = record.state === "running" ? runningSince(record) : null;
  $("task-id").textContent = record.id;
  setTaskState(record.state);
  $("task-state").className = `state ${record.state}`;
  renderFields(record);
  renderProgress(record.state, record.progress);
  showActions(record);
  renderNote();
}

/* ---- cancel and retry --------------------------------------------------------------- */

const TOKEN_KEY = "spoolq-token";
const ACTING = { cancel: "cancelling", retry: "retrying" };

function showActions(record) {
  // What `spoolq cancel` and `spoolq retry` take: a pending or running task, a failed one.
  const cancel = $("cancel-task");
  const retry = $("retry-task");
  const held = [cancel, retry].find((button) => button === document.activeElement);
  cancel.hidden = record.state !== "pending" && record.state !== "running";
  retry.hidden = record.state !== "failed" || Boolean(record.unreadable);
  $("task-actions").hidden = cancel.hidden && retry.hidden && $("token-form").hidden;
  // A button in flight (disabled: its act's answer to come) is left to act, which moves
  // the focus once the buttons are enabled again.
  if (held && held.hidden && !held.disabled) focusAction();
}

function focusAction() {
  // The keyboard stays on the task's actions, on the one the task has now (retry once
  // cancelled, cancel once pending again), else its heading: a button or the token's
  // form hidden under the focus sent it to the page's top, a Tab walk from there.
  const button = [$("cancel-task"), $("retry-task")].find((b) => !b.hidden && !b.disabled);
  (button || $("task-title")).focus();
}

function focusLost() {
  const active = document.activeElement;
  return !active || active === document.body
    || ($("task-actions").contains(active) && (active.disabled || active.closest("[hidden]")));
}

function sayAction(text) {
  const node = $("action-status");
  node.hidden = !text;
  node.textContent = text ? shown(text) : "";
}

function askToken(action, why) {
  const form = $("token-form");
  form.dataset.action = action;
  form.hidden = false;
  $("task-actions").hidden = false;
  sayAction(why);
  $("token").focus();
}

async function act(action, keyed = $("task-actions").contains(document.activeElement)) {
  // keyed: the focus was on the actions (their button, the token's form just sent).
  const id = ui.taskId;
  if (!id) return;
  try {
    await actOn(action, id);
  } finally {
    if (keyed && ui.taskId === id && focusLost()) focusAction();
  }
}

async function actOn(action, id) {
  // With no token yet the write is sent without one: statusd refuses it before it acts,
  // 401 when writes need the token (asked for then), 403 when they are off (no
  // STATUSD_TOKEN), which is said at once.  The token was asked for first, and a token
  // that cannot exist was asked for, then refused as "writes are off" (QA h410).
  const token = sessionStorage.getItem(TOKEN_KEY);
  const buttons = [$("cancel-task"), $("retry-task")];
  for (const button of buttons) button.disabled = true;
  sayAction(`${ACTING[action]} ${id}…`);
  const heads = ui.heads;
  let response;
  let body = null;
  try {
    response = await fetch(`${taskUrl(id)}/${action}`, {
      method: "POST", cache: "no-store",
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    // The task it answers with is drawn, as exact as a read of it (see withExactIntegers).
    const text = await response.text().catch(() => "");
    try {
      body = withExactIntegers(JSON.parse(text), text, (value) => value);
    } catch {
      body = null;
    }
  } catch (err) {
    if (ui.taskId === id) sayAction(`cannot ${action} ${id}: ${err.message}`);
    return;
  } finally {
    for (const button of buttons) button.disabled = false;
  }
  if (ui.taskId !== id) return;
  const why = body && body.error && body.error.message ? body.error.message : `HTTP ${response.status}`;
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    askToken(action, token ? `statusd refused the token (${why}): enter it again`
      : "writes need statusd's token (its STATUSD_TOKEN)");
    return;
  }
  if (!response.ok) {
    sayAction(`cannot ${action} ${id}: ${why}`);
    return;
  }
  if (!body || body.id !== id || typeof body.state !== "string") {
    // A 200 whose body is not the task (cut short, a proxy's page): the write may well be
    // done.  Read as a task, it threw: "retrying" said for good, the view (the streams
    // down) on the state before the retry, its new run never followed.  The task as it is
    // now is asked for instead.
    sayAction(`${action} of ${id} sent; its answer could not be read (HTTP ${
      response.status}): the task is shown as it is now`);
    if (!ui.taskSocket) watchTask(id);
    return;
  }
  // Said of the state the answer gave: the next transition makes it history ("is pending
  // again" stood under the job done, or beside its new failure, QA).  A state the streams
  // showed since the ask went out is newer than the answer's: it is said only where they
  // agree.  Said all the same, "is pending again" stood beside the job run and failed again
  // while the answer was on its way, for as long as the view was open: the transitions
  // that make it history had come before it.
  const shownState = $("task-state").textContent;
  const overtaken = ui.heads !== heads && shownState !== body.state;
  ui.actionSaidAt = overtaken ? shownState : body.state;  // its word goes at the next move
  if (overtaken) sayAction(`${action} of ${id} done`);
  else if (action === "retry") sayAction(`${id} is pending again`);
  // A running task's cancel answers with the task as it is after statusd's wait: still
  // running when its processor has not stopped it yet (the request stays for it).
  else if (body.state === "failed") sayAction(`${id} cancelled`);
  else sayAction(`cancel of ${id} asked; it is still ${body.state} until its processor stops it`);
  // A record the streams drew since the ask went out is as new as this answer or newer: a
  // retry's "pending" came after their "running" of the job claimed at once, and stood
  // beside it until the job ended.  Whatever they have not told yet, they tell.
  if (ui.heads === heads) renderRecord(body).catch(() => {});
  if (!TERMINAL.has(body.state) && !ui.taskSocket) watchTask(id);
}

function useToken(event) {
  event.preventDefault();
  const form = $("token-form");
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  form.hidden = true;
  act(form.dataset.action, true).catch(() => {});
}

function partial(record) {
  // A list row or an event's record that left out what the task view shows.
  return Boolean(record.result_omitted || record.params_omitted || record.meta_omitted
    || record.earlier_errors_omitted || record.error_cut);
}

function runOf(record) {
  // A record's run as far as the task view goes: another state, attempt or end is news.
  return [record.id, record.state, record.attempts, record.started_at, record.finished_at]
    .join("\u0000");
}

async function renderRecord(record) {
  if (record.id !== ui.taskId) return;
  const run = runOf(record);
  // On its way to the view only while no later render came since: that fetch's answer is
  // dropped then.  Taken for on its way still, the task stream's word of an end the view's
  // first read drew over (the job ended as its view opened) fetched nothing: "done", and no
  // result, for good.
  const loading = run === ui.loadingRun && ui.loadingSeq === ui.renderSeq;
  if (partial(record) && (run === ui.shownRun || loading)) {
    // The stream's snapshot of the run whose whole record is shown or on its way (a large
    // one comes without its result): its head is news at most.  Fetched again, a 14 MB
    // record cost half a second at each opening; the two streams' words of one end, come
    // while the first fetch was out, asked twice for a record gone (CI).
    renderHead(record);
    return;
  }
  const seq = ++ui.renderSeq;
  if (partial(record)) {
    // Its state and times at once: a backtest's record of 170 MB took 4 s to come, and
    // the view said "running" with its last progress all that while.
    renderHead(record);
    if (record.result_omitted && record.state === "done") showLoading();
    let whole;
    ui.loadingRun = run;
    ui.loadingSeq = seq;
    try {
      whole = await getRecord(record.id);
    } catch (err) {
      if (seq !== ui.renderSeq || record.id !== ui.taskId) return;
      if (err.tooLarge || (err.status >= 400 && err.status < 500)) {
        // Too large to load, gone (a purge) or refused for good: nothing to try again; its
        // stream tells more.
        if (err.tooLarge) {
          ui.tooLarge = err.tooLarge;
          showTooLarge(record, err.tooLarge);
        } else if (record.state === "done") {
          showLoading(`cannot load the result: ${err.message}`);
        }
        // Nor to fetch again when the same run is told again (the events stream's word of
        // the end, come after the task stream's): its head is news at most.  The view
        // asked statusd again for the record it had just refused, once per telling (QA).
        ui.shownRun = run;
        return;
      }
      // Refused for a moment (a restart, a 503): said, and tried again.
      if (record.state === "done") showLoading(`cannot load the result: ${err.message}; trying again`);
      setTimeout(() => {
        if (seq === ui.renderSeq && record.id === ui.taskId) renderRecord(record).catch(() => {});
      }, RETRY_MS);
      return;
    } finally {
      if (ui.loadingSeq === seq) ui.loadingRun = null;
    }
    if (seq !== ui.renderSeq || whole.id !== ui.taskId) return; // a newer one was drawn
    record = whole;
  }
  renderHead(record);
  renderError(record);
  renderEarlier(record);
  const hasResult = record.state === "done" && record.result !== undefined;
  // A backtest's or a factor analysis's tables (results.js), the JSON collapsed under them.
  // A backtest's table draws the chart of the symbols it puts first; any other result's
  // is of its first symbols.
  // Shown while drawn: the chart is as wide as its box, on a phone narrower than usual.
  const draw = (curves) => {
    const box = $("task-chart");
    box.hidden = false;
    box.hidden = !drawEquity($("equity"), curves);
  };
  const charted = showResultTables(record, $("task-tables"), $("task-result"), draw);
  $("task-result").hidden = !hasResult;
  if (hasResult) {
    showText($("task-result"), shown(shortResult(shownField(record, "result"))), record.id);
  }
  if (!charted) draw(hasResult ? equityCurves(record.result) : []);
  renderJob(record);
  ui.shownRun = runOf(record);
}

function renderError(record) {
  const error = $("task-error");
  error.hidden = !record.error && !record.unreadable;
  // On a job that is not failed, the error is the one its retry came from.
  error.querySelector("h3").textContent =
    record.error && record.state !== "failed" && !record.unreadable ? "last error" : "error";
  if (record.unreadable) {  // a corrupt file in done/ or failed/: no outcome to show
    error.querySelector(".message").textContent = shown(`record unreadable: ${record.unreadable}`);
    error.querySelector(".traceback").hidden = true;
  } else if (record.error) {
    error.querySelector(".message").textContent = shown(`${record.error.type}: ${record.error.message}`);
    const traceback = error.querySelector(".traceback");
    traceback.textContent = shown(record.error.traceback || "");
    traceback.hidden = !record.error.traceback;
  }
}

function renderEarlier(record) {
  // The failures of the job's earlier runs (its retries, and those before a `spoolq retry`),
  // oldest first, one line each: `earlier_errors`.  A record statusd serves as written
  // (another writer's, or one edited by hand) may hold what is no failure in the list:
  // only objects are listed (a null stopped the view).
  const box = $("task-earlier");
  const earlier = Array.isArray(record.earlier_errors)
    ? record.earlier_errors.filter((e) => e !== null && typeof e === "object") : [];
  // A job waiting for its retry: its last failure is its error, which the error box above
  // shows as "last error".  Listed here too, it was said twice; `spoolq show` says it once.
  if (retriedFailure(record, earlier)) earlier.pop();
  const dropped = Number.isInteger(record.earlier_errors_dropped)
    && record.earlier_errors_dropped > 0 ? record.earlier_errors_dropped : 0;
  box.hidden = !earlier.length && !dropped;
  const note = box.querySelector(".dropped");
  note.hidden = !dropped;
  note.textContent = dropped ? `${dropped} older failure${dropped > 1 ? "s" : ""} not kept` : "";
  box.querySelector("ol").replaceChildren(...earlier.map((e) => el("li", {},
    shown(`attempt ${e.attempt} ${e.type} at ${fmtTime(e.finished_at) || "-"}: ${e.message}`))));
}

function retriedFailure(record, earlier) {
  // Whether the last of `earlier` is the record's own error (as spool/cli/render.py's
  // _retried_failure judges it): a job not failed whose error its history ends with, the
  // message matched as the history keeps it (its first EARLIER_MESSAGE_CHARS characters).
  const error = record.error;
  if (!error || typeof error !== "object" || !earlier.length || record.state === "failed") {
    return false;
  }
  const last = earlier[earlier.length - 1];
  const chars = Array.from(String(error.message ?? ""));  // characters, as Python counts
  const kept = chars.length > EARLIER_MESSAGE_CHARS
    ? chars.slice(0, EARLIER_MESSAGE_CHARS - 1).join("") + "\u2026" : chars.join("");
  return last.type === error.type && last.message === kept;
}

function taskMoved(record) {
  // The task stream ends with the terminal state (or when the task leaves the spool):
  // a retry or a re-drop of the id, which runs it again, only the events stream tells.
  if (record.id !== ui.taskId) return;
  ui.taskEvent = record;
  if (ui.taskSocket) return;
  renderRecord(record).catch(() => {});
  if (!TERMINAL.has(record.state)) watchTask(record.id);
}

function closeTaskSocket() {
  if (ui.taskSocket) {
    const socket = ui.taskSocket;
    ui.taskSocket = null;
    socket.onmessage = null;
    if (socket.readyState === WebSocket.CONNECTING) {
      // Closed while connecting, the browser logs a warning for it (a quick switch
      // between tasks logged one each): it closes once open instead.
      socket.onopen = () => socket.close();
    } else {
      socket.close();
    }
  }
}

function watchTask(id) {
  closeTaskSocket();
  let terminal = false;
  const socket = new WebSocket(wsUrl(`api/v1/ws/tasks/${encodeURIComponent(id)}`));
  ui.taskSocket = socket;
  ui.taskEvent = null;
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    // statusd is back: its stream says so.  Not a 503's end: the stream speaking says
    // nothing of the trouble statusd refused for, which the next read tells.
    if (ui.unreachable !== null && ui.unavailable === null) reachable(null);
    if (msg.id !== ui.taskId) return;
    if (msg.record) {
      withExactIntegers(msg.record, event.data, (value) => value.record);
      sawTransition(msg, msg.record);
      terminal = TERMINAL.has(msg.state);
      if (terminal) closeTaskSocket();  // what comes after (a retry) comes by the events
      renderRecord(msg.record).catch(() => {});
      // A retry the events stream told while this stream was still open: follow it (if
      // that stream only lagged behind this one, a snapshot says so).
      const later = ui.taskEvent;
      if (terminal && later && !TERMINAL.has(later.state)) watchTask(id);
    } else if (msg.event === "transition") {
      sawTransition(msg, null);  // inferred: a move too fast to see, its record follows
    } else if (msg.event === "progress") {
      setTaskState(msg.state);
      renderProgress(msg.state, msg.progress);
      renderNote();
    }
  };
  socket.onclose = (event) => {
    if (ui.taskSocket !== socket) return;
    ui.taskSocket = null;
    if (event.code === TASK_GONE && ui.taskId === id) {
      showGone();
      return;
    }
    if (!terminal && ui.taskId === id) followOverRest(id);
  };
}

function showGone() {
  // The task left the spool (a withdrawn drop, a purge): nothing more will come.
  setTaskState("not found");
  $("task-state").className = "state";
  renderProgress("", null);
  showActions({ state: "" });
  renderNote();
}

async function checkEndedTask() {
  // A purge announces nothing, and an ended task's stream is closed: when the spool's
  // total falls, the ended task the view shows is asked for again (its headers only: a
  // backtest's record may be 170 MB), or it went on showing a purged record as there.
  const id = ui.taskId;
  if (id === null || ui.taskSocket || !TERMINAL.has($("task-state").textContent)) return;
  const heads = ui.heads;
  // One look out at a time: a later one (jobs gone again while the first was out, statusd
  // slow to answer) stands for both, and the earlier is let go with its answer.  Each
  // stats refresh that saw jobs gone sent its own, and each answer was drawn.
  if (ui.looking) ui.looking.abort();
  const control = new AbortController();
  ui.looking = control;
  let response;
  try {
    response = await fetch(taskUrl(id), { method: "HEAD", cache: "no-store",
      signal: control.signal });
  } finally {
    control.abort();
  }
  if (ui.looking !== control) return;  // let go as it came
  ui.looking = null;
  // A record shown since (the id dropped again, and run, while this was out) is newer
  // than the 404: it said "not found" beside the task there, done.
  if (response.status === 404 && ui.taskId === id && !ui.taskSocket && ui.heads === heads) {
    showGone();
  }
}

function followOverRest(id) {
  // Until its stream is back (statusd away, a proxy that passes no WebSocket) the task
  // is read over REST at each try to reconnect, so the view goes on following it.
  // Its read and its try again are of the view's opening, as openTask's are: left and
  // opened again between two reads, the view went on with the first opening's reads
  // beside the new one's, two a second (one more at each opening) while the task ran.
  const opening = ui.opening;
  const ours = () => ui.opening === opening && ui.taskId === id && !ui.taskSocket;
  const retry = () => { if (ours()) watchTask(id); };
  const heads = ui.heads;
  if (ui.tooLarge !== null) {
    followTooLarge(id, ours, retry, heads);
    return;
  }
  getRecord(id).then((record) => {
    reachable(null);
    if (!ours()) return;
    // A record drawn since the ask (the events stream's word of the job's end, come while
    // this read was out) is newer: drawn over it, "running" stood over "done" until the
    // next read.  The task is followed on as far as the record shown says.
    const newer = ui.heads !== heads;
    if (!newer) renderRecord(record).catch(() => {});
    if (!TERMINAL.has(newer ? $("task-state").textContent : record.state)) setTimeout(retry, 1000);
  }).catch((err) => {
    if (err.tooLarge) {
      // statusd answered: the record is too large to load.  Taken for no answer, the view
      // said "statusd unreachable", "processor: ?" and no state, and read the whole record
      // again every second (its headers, then cut off).  Its list row is shown, and the
      // task is followed by a look at its headers from now on.
      reachable(null);
      if (!ours()) return;
      ui.tooLarge = err.tooLarge;
      if (ui.heads === heads) showRowTooLarge(id);
      setTimeout(retry, 1000);
      return;
    }
    if (err.status === 404) {
      // Gone (withdrawn, purged) before its stream's handshake, which was refused: the
      // browser tells that as a close 1006, not the stream's 1008.  Taken for statusd
      // away, it was asked again every second and the view said "pending" for good.  A
      // new drop of the id comes by the events stream (taskMoved).
      if (ours() && ui.heads === heads) showGone();
      return;
    }
    if (!err.status || err.status >= 500) reachable(err);
    setTimeout(retry, 1000);
  });
}

function showRowTooLarge(id) {
  // A task too large to load whose stream is refused has no snapshot (the record without
  // its result) to draw: its list row (brief: without params, meta, result) stands for it,
  // as kept by the list's reads and the events stream.  Drawn when it is news only.
  const entry = ui.rows.get(id);
  if (!entry) {
    // Not in the list shown (another state's filter, a later page): where the whole
    // record is, at least; its state is left unknown rather than guessed, and its job too
    // (said "{}": no tool, no params, of a job that has them).
    if (ui.shownRun === null && $("task-result").hidden) {
      showTooLarge({ id, params_omitted: true, meta_omitted: true }, ui.tooLarge);
    }
    return;
  }
  if (runOf(entry.record) === ui.shownRun) return;
  renderHead(entry.record);
  showTooLarge(entry.record, ui.tooLarge);
  ui.shownRun = runOf(entry.record);
}

function followTooLarge(id, ours, retry, heads) {
  // followOverRest's read of a task known too large to load: its headers only (a HEAD),
  // at the same pace as its stream is tried again.  Its size under the page's limit (a
  // new run's record) is read whole again; a 404 is the task gone, as a read's.
  const again = () => { if (ours()) followOverRest(id); };
  fetch(taskUrl(id), { method: "HEAD", cache: "no-store" }).then((response) => {
    if (response.status >= 500) {
      const err = new Error(`HTTP ${response.status}`);
      err.status = response.status;
      reachable(err);
      setTimeout(retry, 1000);
      return;
    }
    reachable(null);
    if (!ours()) return;
    if (response.status === 404) {
      if (ui.heads === heads) showGone();
      return;
    }
    // No length said (a record sent a chunk at a time): not known loadable, not read.
    const length = response.headers.get("Content-Length");
    const size = length === null ? NaN : Number(length);
    if (response.ok && size <= MAX_RECORD_BYTES) {
      ui.tooLarge = null;  // loadable now: read whole, as any record
      again();
      return;
    }
    if (response.ok && size > MAX_RECORD_BYTES) ui.tooLarge = size;
    if (ui.heads === heads) showRowTooLarge(id);
    if (!TERMINAL.has($("task-state").textContent)) setTimeout(retry, 1000);
  }).catch((err) => {
    reachable(err);
    setTimeout(retry, 1000);
  });
}

function clearTask() {
  // Nothing of the task viewed before stays under a new id (a "not found" over its result).
  ui.shownRun = null;
  ui.loadingRun = null;
  ui.readRefused = false;
  ui.tooLarge = null;
  // Nor a render of it still on its way: its try again (after a 503), come once the view
  // left and opened the task again, fetched the whole record a second time and the new
  // opening's read of it was dropped for that (h362).
  ui.renderSeq += 1;
  ui.actionSaidAt = null;
  ui.requeued = null;
  ui.runAttempts = null;
  ui.shownPercent = "";
  ui.runSince = null;
  ui.indexingNote = null;
  ui.fieldsOf = null;
  $("task-state").className = "state";
  $("task-fields").replaceChildren();
  for (const box of ["task-progress", "task-error", "task-earlier", "task-tables", "task-chart",
                     "task-result",
                     "task-params", "task-actions", "token-form", "action-status", "task-note"]) {
    $(box).hidden = true;
  }
  $("task-result").open = true;  // a record too large to load says so in it
}

async function openTask(id, indexing = null) {
  // indexing: asked again while statusd loads its index (its note, kept meanwhile).
  ui.taskId = id;
  // The task shown before keeps no stream: one left open stood for this task's, which
  // was then never opened (see the end).
  closeTaskSocket();
  // Its tries again are of this opening only: the view left and opened again before one
  // came, it loaded the task a second time over the view shown (its result hidden and its
  // state blank while the whole record came again).
  const opening = ++ui.opening;
  // Nor when a record was drawn since the refused read (the events stream's word of the
  // job's end, its whole record fetched and shown): opened anew over it, the view blanked,
  // fetched the record a third time, and a second 503 said "unavailable" over the task
  // done (h362).  That record is the task's, as new as a read again: its note goes.
  const again = (retry) => {
    if (ui.opening !== opening || ui.taskId !== id) return;
    if (!ui.taskSocket && ui.heads === heads) {
      retry();
    } else if (ui.indexingNote !== null) {
      ui.indexingNote = null;
      renderNote();
    }
  };
  $("list-view").hidden = true;
  $("task-view").hidden = false;
  $("task-id").textContent = shown(id);  // a link's: anyone's text (a bidi override)
  setTaskState(indexing === null ? "" : "indexing");
  clearTask();
  if (indexing !== null) {
    ui.indexingNote = indexing;
    renderNote();
  }
  if (!VALID_ID.test(id)) {  // it said "not found ... it shows here once submitted"
    setTaskState("invalid id");
    renderNote();
    return;
  }
  const heads = ui.heads;
  // Its read is of this opening only, as its tries again are: the view left the task and
  // opened it again before the read came, which came first and was drawn in the new
  // opening, whose own read, come after, was dropped as older than a record drawn since
  // ("running" beside the job done in between, until a stream told its end).
  const current = () => ui.opening === opening && ui.taskId === id;
  try {
    const record = await getRecord(id);
    if (!current()) return;
    ui.indexingNote = null;
    // A record drawn since the ask (the events stream's word of the job's end, come while
    // this read was out) is newer: drawn over it, "running" stood over "done", and the
    // whole record that word had asked for was dropped and fetched again.
    if (ui.heads === heads) await renderRecord(record);
  } catch (err) {
    // A record shown since the ask (the task submitted as the view opened, told by the
    // events stream before this 404 came) is newer: "not found" stood over it, pending.
    if (!current() || ui.heads !== heads) return;
    if (err.tooLarge) {  // its stream's first message is the record without its result
      // Known too large: without that stream (a proxy that passes no WebSocket) the
      // task is followed by a look at its headers, not read whole again (followOverRest).
      ui.tooLarge = err.tooLarge;
      // Unless one is open already (the events stream's word opened it meanwhile; or,
      // before an earlier opening's read was dropped, that opening's, of this task): a
      // second was two handshakes and two snapshots (h362).
      if (!ui.taskSocket) watchTask(id);
      return;
    }
    if (err.status >= 400 && err.status < 500) {  // 404 (400, an id that can't be, is
      setTaskState(err.status === 400 ? "invalid id" : "not found");  // above)
      renderNote();
      return;
    }
    if (err.type === "indexing") {
      // statusd has just started and loads its index: no error, the task comes once it is in.
      setTaskState("indexing");
      ui.indexingNote = indexingText(err, "the task shows once it is done");
      renderNote();
      const note = ui.indexingNote;
      setTimeout(() => again(() => openTask(id, note)), RETRY_MS);
      return;
    }
    // statusd unreachable or refusing for now (a restart, a 503): say so, try again.
    setTaskState("unavailable");
    $("task-state").className = "state";
    const error = $("task-error");
    error.hidden = false;
    error.querySelector("h3").textContent = "error";
    error.querySelector(".message").textContent = shown(`cannot load the task: ${err.message}`);
    error.querySelector(".traceback").hidden = true;
    ui.readRefused = true;
    showTitle();
    setTimeout(() => again(() => openTask(id)), RETRY_MS);
    return;
  }
  // A task left while its record came (a large one takes seconds): the one shown now keeps
  // its stream (this one's closed it, and the view stayed "running" past its end).  One
  // the events stream's word opened meanwhile (taskMoved) is kept: a second was two
  // handshakes and two snapshots.
  if (ui.taskId === id && !ui.taskSocket) watchTask(id);
}

function showList() {
  ui.taskId = null;
  closeTaskSocket();
  showTitle();
  $("task-view").hidden = true;
  $("list-view").hidden = false;
}

function focusRow(id) {
  // Back in the list, the keyboard is where it left: on the link of the task it opened.
  const entry = id === null ? null : ui.rows.get(id);
  const link = entry && entry.tr.querySelector("a");
  if (link) link.focus();
}

/* The list's filters live in its link ("#/?state=failed&tool=run_backtest"): a filtered
   list can be bookmarked, sent, reloaded, and is the list a task view goes back to. */
const STATES = new Set(["pending", "running", "done", "failed"]);

function filterOf(hash) {
  const at = hash.indexOf("?");
  const params = new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
  const state = params.get("state") || "";
  return { state: STATES.has(state) ? state : "", tool: params.get("tool") || "" };
}

function listHash(filter) {
  const params = new URLSearchParams();
  if (filter.state) params.set("state", filter.state);
  if (filter.tool) params.set("tool", filter.tool);
  const query = params.toString();
  return query ? `#/?${query}` : "#/";
}

function showFilter() {
  // The selects say the filter in force; a tool no stats have named yet (a link to a
  // tool with no job now) gets its option, or the select would show "all".
  updateToolOptions();
  $("state-filter").value = ui.filter.state;
  $("tool-filter").value = ui.filter.tool;
  $("back-to-list").href = listHash(ui.filter);
  showTitle();
  showMatched();
}

function showMatched() {
  // How many tasks the filter holds, every page of it: the list shows 50 at a time, and
  // "older tasks" never said how many there were (QA h392).  From the stats (a tool's from
  // counts_by_tool, which statusd gives once its index is in); not known, not said.
  const node = $("matched");
  const { state, tool } = ui.filter;
  const counts = !ui.counts ? null : !tool ? ui.counts.counts
    : ui.counts.byTool && Object.hasOwn(ui.counts.byTool, tool) ? ui.counts.byTool[tool] : null;
  const values = counts ? (state ? [counts[state]] : Object.values(counts)) : [];
  const count = values.every(Number.isInteger)
    ? values.reduce((sum, n) => sum + n, 0) : 0;
  node.hidden = count === 0;  // none: the list says "No tasks."
  node.textContent = `${COUNT_FORMAT.format(count)} ${count === 1 ? "task" : "tasks"}`;
}

function setFilter(filter) {
  // A change of the selects: the link says it, in place (no history entry per change).
  ui.filter = filter;
  history.replaceState(null, "", listHash(filter));
  showFilter();
  loadList().catch(() => {});
}

function openById(event) {
  // Enter in "open task": its view, from an id or a task's link pasted whole (a chat's
  // "http://host:8000/#/tasks/bt-7"); what no task can have says so there.  A list's link
  // ("http://host:8000/#/?state=failed", no id can hold "#") opens that list: it was taken
  // for an id and said "invalid id".
  event.preventDefault();
  const input = $("goto-id");
  let id = input.value.trim();
  const list = id.lastIndexOf("#/");
  if (list >= 0 && !id.startsWith("tasks/", list + 2)) {
    input.value = "";
    location.hash = listHash(filterOf(id.slice(list + 1)));
    return;
  }
  const at = id.lastIndexOf("#/tasks/");
  if (at >= 0) {
    id = id.slice(at + "#/tasks/".length);
    try {
      id = decodeURIComponent(id);
    } catch (err) {
      // left as pasted: the view says no task can have it
    }
  }
  if (!id) return;
  input.value = "";
  // Half a surrogate pair (a paste cut short) has no link (an uncaught URIError, and Enter
  // did nothing): it is U+FFFD, which no id can hold either.
  id = id.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
    "\ufffd");
  location.hash = `#/tasks/${encodeURIComponent(id)}`;
}

function route() {
  const match = location.hash.match(/^#\/tasks\/(.+)$/);
  if (!match) {
    const from = ui.taskId;
    const filter = filterOf(location.hash);
    if (filter.state !== ui.filter.state || filter.tool !== ui.filter.tool) {
      ui.filter = filter;
      showFilter();
      loadList().catch(() => {});
    }
    showList();
    focusRow(from);
    return;
  }
  let id = match[1];
  try {
    id = decodeURIComponent(id);
  } catch (err) {
    // A mistyped or cut-off link ("%E0%A4%A"): no such task, not an uncaught URIError.
  }
  openTask(id);
  // The link that opened it is hidden now: the keyboard goes on from the task's heading,
  // not from the page's top.
  $("task-title").focus();
}

/* ---- start --------------------------------------------------------------------------- */

function start() {
  $("state-filter").addEventListener("change", (e) => {
    setFilter({ ...ui.filter, state: e.target.value });
  });
  $("tool-filter").addEventListener("change", (e) => {
    setFilter({ ...ui.filter, tool: e.target.value });
  });
  $("filters").addEventListener("submit", openById);
  $("more").addEventListener("click", () => loadMore().catch(listError));
  $("cancel-task").addEventListener("click", () => act("cancel").catch(() => {}));
  $("retry-task").addEventListener("click", () => act("retry").catch(() => {}));
  $("token-form").addEventListener("submit", useToken);
  window.addEventListener("hashchange", route);
  // The chart is drawn again as its box's width changes: a window resized, a phone turned,
  // or a scrollbar come with the tables drawn after it (which fires no resize: drawn
  // 558 px in a 545 px box, the chart was scaled down).  One redraw a frame at most.
  let fitting = false;
  new ResizeObserver(() => {
    if (fitting) return;
    fitting = true;
    requestAnimationFrame(() => { fitting = false; fitEquity($("equity")); });
  }).observe($("equity"));
  connectEvents();
  setInterval(() => refreshStats().catch(() => {}), STATS_EVERY_MS);
  setInterval(tickRunning, 1000);
  route();
}

document.addEventListener("DOMContentLoaded", start);
