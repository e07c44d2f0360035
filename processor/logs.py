"""Structured logs: one JSON object per line on stderr, one line per transition.

journald keeps stderr lines as they are, so ``journalctl -u spool-processor
-o cat | jq`` reads them directly.  Python warnings and exceptions that end a
thread become such lines too, in the processor and in COMPUTE workers.

Lines are collected in a :class:`LineBuffer` and written by :func:`flush`,
which the processor's loop calls once per pass, after each COMPUTE claim
(so a claim's line is out before its job can run, whatever kills the daemon
then) and after each FAST run (a FAST tool runs in the processor: one that
calls ``os._exit`` or crashes in C must not take the lines of the runs recorded
before it with it, and the next pass may first wait): the end-of-run lines of a
COMPUTE burst share writes, and a line waits at most one pass of the loop.
Warnings, errors and lines from other threads are written at once.

A write waits for room: a log reader that stops reading (journald stalled) holds the
writer until it reads again.  :func:`waiting_since` says since when, so the systemd
watchdog can be fed meanwhile (:class:`processor.notify.WaitingLogPinger`), and a
write that waited :data:`WAIT_SAID_S` or more is followed by a warning line that says
how long.
Transitions, and the lines of COMPUTE tools' output the loop reads
(:func:`info`), skip the ``logging`` record machinery and are formatted
straight into the buffer; everything else goes through ``logging``.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import orjson

from spool.text import valid_strings, valid_text

TRANSITIONS = logging.getLogger("spoolq.transitions")
_loop_thread = threading.main_thread()  # the processor's loop thread (see set_loop_thread)


def _no_job() -> tuple[str, str] | None:
    return None


_job_of_line: Callable[[], tuple[str, str] | None] = _no_job
"""The (id, tool) of the job a line logged now belongs to (see tag_lines_with)."""


def _dumps(entry: dict[str, Any]) -> str:
    """One JSON line; strings orjson refuses (lone surrogates) are escaped, never fatal;
    a time in UTC ends in ``Z``, as ``ts`` and the records' do."""
    try:
        return orjson.dumps(entry, default=str, option=orjson.OPT_UTC_Z).decode()
    except TypeError:
        return orjson.dumps(valid_strings(entry), default=lambda v: valid_text(str(v)),
                            option=orjson.OPT_UTC_Z).decode()


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text
_milli: tuple[int, str] = (-1, "")  # the last millisecond formatted, and its timestamp


def _timestamp(created: float) -> str:
    """``created`` to the millisecond, in UTC; the lines of one pass of the loop mostly
    share a millisecond, and then its text."""
    global _second, _milli
    milli = int(created * 1000)
    last, stamp = _milli  # one read: another thread may swap the tuple meanwhile
    if last == milli:
        return stamp
    second, text = _second
    if second != milli // 1000:
        second = milli // 1000
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    stamp = f"{text}.{milli % 1000:03d}Z"
    _milli = (milli, stamp)
    return stamp


def _entry(created: float, level: str, logger: str, msg: str,
           fields: dict[str, Any]) -> dict[str, Any]:
    """The one shape of a log line: ts, level, logger, msg, then the fields."""
    return {"ts": _timestamp(created), "level": level, "logger": logger, "msg": msg, **fields}


MAX_TEXT = 16_384
"""Characters of a message or traceback kept on a line: journald splits longer lines
(LineMax=48K by default), which would break the JSON."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        entry = _entry(record.created, record.levelname.lower(), record.name, "",
                       fields if isinstance(fields, dict) else {})
        if "id" not in entry and (job := _job_of_line()) is not None:
            entry["id"], entry["tool"] = job
        message = record.getMessage()
        if len(message) > MAX_TEXT:
            message, entry["truncated"] = message[:MAX_TEXT], True
        entry["msg"] = message
        if record.exc_info:
            exc = self.formatException(record.exc_info)
            if len(exc) > MAX_TEXT:  # the end of a traceback says what went wrong
                exc, entry["truncated"] = exc[-MAX_TEXT:], True
            entry["exc"] = exc
        return _dumps(entry)


WAIT_SAID_S = 1.0
"""A write of the log that waited this long for its reader is said in a warning line."""


class LineBuffer(logging.Handler):
    """Formatted lines held until :meth:`flush` writes them with one call."""

    def __init__(self, stream: TextIO, *, buffered: bool = True) -> None:
        super().__init__()
        self.stream = stream
        self.buffered = buffered
        self.lines: list[str] = []
        self.writing_since: float | None = None
        """Since when (monotonic) the loop thread has waited for the log: in its own
        write, or for the lock another thread holds in one; None when it does not.  Only
        the loop's: another thread stuck in a write while the loop was held elsewhere had
        the watchdog fed for a hung loop (QA h336)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line)
        if (not self.buffered or record.levelno >= logging.WARNING
                or threading.current_thread() is not _loop_thread):
            self.flush()

    def add(self, line: str) -> None:
        self._take()
        try:
            self.lines.append(line)
        finally:
            self.release()

    def _take(self) -> None:
        """The handler's lock, held while writing (two threads' flushes never
        interleave); the loop thread's wait for it, another thread holding it in a
        write, is a wait for the log (:attr:`writing_since`)."""
        lock = self.lock
        assert lock is not None  # Handler.createLock made it
        if lock.acquire(blocking=False):
            return
        if threading.current_thread() is not _loop_thread:
            lock.acquire()
            return
        self.writing_since = time.monotonic()
        try:
            lock.acquire()
        finally:
            self.writing_since = None

    def flush(self) -> None:
        self._take()
        try:
            lines, self.lines = self.lines, []
            if lines:
                loop = threading.current_thread() is _loop_thread
                start = time.monotonic()
                if loop:
                    self.writing_since = start
                try:
                    self._write(lines)
                    if (waited := time.monotonic() - start) >= WAIT_SAID_S:
                        # A write too, which a reader still slow holds as long: it waited
                        # unseen by the pings (QA h336).
                        self._write([_dumps(_entry(
                            time.time(), "warning", "spoolq.logs",
                            "the log's reader took this long to take these lines; the "
                            "process waited for it", {"waited_s": round(waited, 3)}))])
                finally:
                    if loop:
                        self.writing_since = None
        except (OSError, ValueError):
            pass  # stderr is gone (closed pipe): nothing left to tell
        finally:
            self.release()

    def _write(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


_buffer: LineBuffer | None = None
_settings = {"level": logging.INFO}  # the root logger's level, as setup_logging set it


def set_loop_thread(thread: threading.Thread) -> None:
    """Name the thread that flushes each pass; other threads' lines are written at once."""
    global _loop_thread
    _loop_thread = thread


def setup_logging(level: str, stream: TextIO | None = None, *, buffered: bool = True
                  ) -> None:
    """JSON lines on ``stream`` (stderr); ``buffered=False`` writes each line at once (for
    a process without a loop that flushes, a COMPUTE worker)."""
    global _buffer
    handler = LineBuffer(stream or sys.stderr, buffered=buffered)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _buffer = handler
    _settings["level"] = root.level
    # What Python itself would print as plain text becomes a line like any other:
    # warnings.warn (numpy's RuntimeWarnings too), and an exception that ends a thread.
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_error
    atexit.register(flush)


def tag_lines_with(job_of: Callable[[], tuple[str, str] | None] | None) -> None:
    """Lines logged through ``logging`` without an ``id`` (a tool's own loggers, warnings,
    a tool thread's exception) carry the ``id`` and ``tool`` of the job ``job_of`` names
    at the time, so one jq query finds everything about a job; None: no tagging."""
    global _job_of_line
    _job_of_line = job_of or _no_job


def repair() -> None:
    """Put back what a tool (a FAST one runs in the processor; a module as it is
    imported) may have left changed in logging, which would silence the processor's log
    for good, or mix plain text into it: ``logging.disable``, the root logger's handler
    removed or joined by a plain stream handler (``basicConfig(force=True)``:
    every line then twice, once as plain text; QA), its level changed, loggers disabled
    (:func:`reenable`)."""
    if _buffer is None:
        return
    root = logging.getLogger()
    if root.manager.disable:
        logging.disable(logging.NOTSET)
    if _buffer not in root.handlers:
        root.addHandler(_buffer)
    for handler in list(root.handlers):  # (a stream of the process's: stdio, or the
        # capture of it a module's import ran under; a FileHandler is the tool's own)
        if handler is not _buffer and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    if root.level != _settings["level"]:
        root.setLevel(_settings["level"])
    reenable()


def reenable() -> None:
    """Loggers ``logging.config.dictConfig`` or ``fileConfig`` (``disable_existing_loggers``,
    True unless said) disabled: every logger that existed then, the processor's own
    (``spoolq.*``, ``py.warnings``) and the tools' module loggers, silent for good."""
    if _SENTINEL.disabled:
        for logger in list(logging.getLogger().manager.loggerDict.values()):
            if isinstance(logger, logging.Logger) and logger.disabled:
                logger.disabled = False


_SENTINEL = logging.getLogger("spoolq.transitions")


class WarningFilters:
    """``warnings``' filters (and ``showwarning``) as they are now, put back by
    :meth:`restore` once a tool changed them for good (``simplefilter("error")`` made a
    later job that merely warned fail).  ``catch_warnings`` does the work, so the
    module's caches are told."""

    def __init__(self) -> None:
        self._guard = warnings.catch_warnings()
        self._guard.__enter__()
        self._filters = list(warnings.filters)
        self._show = warnings.showwarning

    def restore(self) -> None:
        if warnings.filters != self._filters or warnings.showwarning is not self._show:
            self._guard.__exit__(None, None, None)
            self.__init__()  # type: ignore[misc]  # a fresh copy to guard

    def close(self) -> None:
        self._guard.__exit__(None, None, None)


def _log_thread_error(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):
        return  # as threading's own hook: a thread may end itself so
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("spoolq.thread").error("%s in thread %s", args.exc_type.__name__, name,
                                             exc_info=args.exc_value)


def flush() -> None:
    """Write every buffered line (the loop calls this once per pass)."""
    if _buffer is not None:
        _buffer.flush()


def waiting_since() -> float | None:
    """Since when (``time.monotonic``) the loop thread has been waiting for its log (its
    own write, or the lock a stuck writer holds); None when it is not."""
    return _buffer.writing_since if _buffer is not None else None


def info(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """One info line of ``logger`` with ``fields``, formatted straight into the buffer as
    a transition is (for the lines of a COMPUTE tool's output, which the loop logs in
    bulk); ``msg`` longer than :data:`MAX_TEXT` is for the caller to cut."""
    if _buffer is None or not logger.isEnabledFor(logging.INFO):
        logger.info(msg, extra={"fields": fields})
        return
    _buffer.add(_dumps(_entry(time.time(), "info", logger.name, msg, fields)))


def transition(event: str, **fields: Any) -> None:
    """Log one transition (``event`` is e.g. ``claimed``, ``done``, ``failed``)."""
    info(TRANSITIONS, event, {"event": event, **fields})


def retry_fields(retry_at: datetime | None, now: datetime) -> dict[str, Any]:
    """A ``requeued`` line's ``retry_in_s`` (the time left at ``now``, when the line is
    written) and ``retry_at`` (the backoff's end the requeued job carries), a run's and
    an orphan's alike: the orphan's said the delay drawn, which its recovery pass had
    already shortened."""
    if retry_at is None:
        return {"retry_in_s": 0.0, "retry_at": None}
    left = (retry_at - now).total_seconds()
    return {"retry_in_s": round(max(0.0, left), 3), "retry_at": retry_at}
