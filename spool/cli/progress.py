"""How ``spoolq wait`` shows a job moving: a live bar on a terminal, plain lines otherwise.

:class:`ProgressBar` keeps one ``\\r``-redrawn line on a terminal (its run time, and
once its progress tells a pace, what is left at that pace: ``0:12<0:17``, or
``0:45 overdue`` past the end that pace foretold).  Its own
thread redraws it at most :data:`REDRAW_HZ` times a second from the latest
record it was given: ``Client.wait`` reports only changes, so without the
thread a burst of updates could leave a stale state on screen, and the run
time would stand still.  The line never exceeds the terminal's width, counted in
columns (a wide CJK character takes two; a wrapped line cannot be redrawn with
``\\r``), and is cleared at the end (on Ctrl-C and SIGTERM too).  A note from
another thread (:meth:`ProgressBar.note`) blanks the bar, takes a line of its own
and leaves the bar to be drawn again below it.

:class:`StateLog` is for logs and pipes: one line per state change, no
control characters.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from spool.cli.render import (
    as_written,
    cells,
    elapsed_s,
    fit,
    pad,
    printable,
    utf8_codec,
    when,
)
from spool.states import TERMINAL, JobState

if TYPE_CHECKING:
    from spool.models import Record

REDRAW_HZ = 10
BAR_CELLS = 24
MIN_BAR_CELLS = 10
MIN_MESSAGE_CELLS = 30
TERM_LOCK_WAIT_S = 1.0
"""How long the SIGTERM handler waits for the line (a note being written) to blank it."""


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
"""What ``signal.signal`` returns: the handler to put back."""


class Watcher(Protocol):
    """What ``wait`` feeds every record it sees."""

    def update(self, record: Record) -> None: ...

    def note(self, text: str) -> None:
        """One line for the person watching (any thread)."""

    def __enter__(self) -> Watcher: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def clock(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``): whole seconds, so an idle bar redraws once a second."""
    if seconds is None:
        return "-:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


ETA_MIN_FRACTION = 0.02
ETA_MIN_S = 1.0
"""A run's time left is told once its progress says enough of its pace: at 2% or more,
a second or more after its start."""


def left_s(record: Record, now: datetime | None = None) -> float | None:
    """How long a running job has left at its pace so far (a straight line from its
    start through its latest report), counted from ``now``; None until that says enough
    (:data:`ETA_MIN_FRACTION`, :data:`ETA_MIN_S`).  A researcher watching a backtest
    saw 42% and its run time, and had to work out the rest.  Negative once the run is
    past the end its pace foretold (its last stretch slower, or its reports late)."""
    progress = record.progress
    if record.state is not JobState.RUNNING or progress is None:
        return None
    fraction, started, updated = progress.fraction, progress.started_at, progress.updated_at
    if fraction is None or not ETA_MIN_FRACTION <= fraction < 1 or started is None \
            or updated is None:
        return None
    spent = (updated - started).total_seconds()
    if spent < ETA_MIN_S:
        return None
    # In seconds, not as a date: a start far off (a clock set wrong) put the end past the
    # year 9999, an OverflowError that ended the bar's thread.
    since_report = ((now or datetime.now(UTC)) - updated).total_seconds()
    return spent * (1 - fraction) / fraction - since_report


def run_times(seconds: float | None, left: float | None) -> str:
    """The run time, then what is left (:func:`left_s`): ``0:12<0:17``, a second left
    counted as one (``<0:00`` is never shown); ``0:45 overdue`` once the run is past its
    estimate.  The bar said ``<0:00`` for as long as such a run went on, a countdown at
    its end that never ended (the dashboard says "about to finish, at its pace so
    far")."""
    if left is None:
        return clock(seconds)
    if left <= 0:
        return f"{clock(seconds)} overdue"
    return f"{clock(seconds)}<{clock(math.ceil(left))}"


def held(record: Record) -> str:
    """Of a pending job held by its ``not_before`` or a retry's backoff: until when.  The
    bar said "pending" alone of a job held until tomorrow (QA h401)."""
    due = record.due_at() if record.state is JobState.PENDING else None
    if due is None or due <= datetime.now(UTC):
        return ""
    return f"held until {when(due)}"


def bar_line(record: Record, columns: int, escaping: str | None = None) -> str:
    """``<id> running [#####.....]  42% 0:12<0:17 loading data`` in at most ``columns - 1``:
    the run time so far, then (``<``) what is left at its pace (:func:`run_times`).

    ``escaping``: the encoding of a stream that is not UTF-8, which writes what it lacks
    as escapes (PYTHONIOENCODING=ascii; LC_ALL=C with PYTHONUTF8=0).

    The message is what tells a long run's progress, and it comes last: when the line
    does not fit, the bar gives up cells first (down to :data:`MIN_BAR_CELLS`), then the
    id (the command line names it, and ``submit --wait`` printed it just above), and only
    then is the message cut.  A generated id is 28 characters: on an 80-column terminal
    the full line left 5 columns for the message.  A message too long for any layout
    keeps the id beside it when :data:`MIN_MESSAGE_CELLS` of it still show.  A terminal
    too narrow for the shortest bar (under about 36 columns) gets no bar
    (:func:`narrow_line`).
    """
    progress = record.progress
    fraction = progress.fraction if progress and progress.fraction is not None else None
    if fraction is None and record.state is JobState.DONE:
        fraction = 1.0
    running = record.state is JobState.RUNNING
    done = record.state is JobState.DONE
    if not done and fraction is not None:  # 99.6% going on (or failed) is no '100%'
        fraction = min(fraction, 0.99)
    percent = "   -" if fraction is None else f"{fraction:4.0%}"
    message = printable(progress.message) if progress and running else held(record)
    if escaping is not None:  # counted as the stream writes it: "\\u56de" is 6 columns
        message = as_written(message, escaping)
    seconds = record.duration_s if record.state in TERMINAL else elapsed_s(record)
    times = run_times(seconds, left_s(record))
    room = max(columns - 1, 0)

    def line(bar_cells: int, with_id: bool, message: str = message) -> str:
        # A cell is filled once it is reached; done, as its percent rounds: at 99.6% a
        # done job said '100%' beside a bar a cell short of full.
        reached = (fraction or 0.0) * bar_cells
        filled = round(reached) if done else int(reached)
        text = (f"{record.state.value:<7} [{'#' * filled}{'.' * (bar_cells - filled)}]"
                f" {percent} {times} {message}").rstrip()
        return f"{record.id} {text}" if with_id else text

    if cells(line(MIN_BAR_CELLS, False, message="")) > room:
        # Not even the times fit beside a bar: whole pieces, never the end of a number (on
        # 40 columns '1:00:00<12:34:56' was cut to '1:00:00<12:34', 12 min for 12 h).
        return narrow_line(record.state.value, percent.strip(), times, message, room)
    full = line(BAR_CELLS, True)
    over = cells(full) - room  # in columns: CJK takes two each
    if over <= 0:
        return full
    with_id = line(max(BAR_CELLS - over, MIN_BAR_CELLS), True)
    without_id = line(MIN_BAR_CELLS, False)
    for candidate in (with_id, without_id):
        if cells(candidate) <= room:
            return candidate
    # Even without the id the message is cut: keep the id if the message still gets a fair
    # share of the line (a wide terminal, a long message).
    share = room - (cells(with_id) - cells(message))
    return fit(with_id if share >= MIN_MESSAGE_CELLS else without_id, room).rstrip()


def narrow_line(state: str, percent: str, times: str, message: str, room: int) -> str:
    """The line in ``room`` columns where no bar fits: ``running 42% 0:12<0:17 load``, the
    message cut; narrower, ``42% 0:12<0:17``, then ``42%``, then nothing.  The bar took
    10 columns whatever the width, so under 11 it wrapped at each redraw, a new line on
    the screen every second, and under 36 it was cut before its fraction."""
    told = f"{state} {percent} {times}"
    if cells(told) <= room:
        return fit(f"{told} {message}", room).rstrip()
    return next((text for text in (f"{percent} {times}", percent) if cells(text) <= room), "")


class ProgressBar:
    """A one-line live bar for a terminal (see the module docstring)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._record: Record | None = None
        self._shown = ""
        self._lock = threading.Lock()  # the line on screen: the bar's thread and notes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spoolq-bar", daemon=True)
        self._old_term: Handler = None
        encoding = getattr(out, "encoding", None)
        self._escaping = None if encoding is None or utf8_codec(encoding) else encoding

    def update(self, record: Record) -> None:
        self._record = record  # the thread draws it; a reference swap needs no lock

    def note(self, text: str) -> None:
        """``spoolq: text`` on a line of its own; the bar's thread draws the bar again."""
        with self._lock:
            self._blank()
            self.out.write(f"spoolq: {text}\n")
            self.out.flush()

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        # Not over an ignored SIGTERM (``trap '' TERM``): whoever started us chose that.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            self._old_term = signal.signal(signal.SIGTERM, self._terminated)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._clear()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)

    def _clear(self, lock_wait_s: float = -1) -> None:
        """Stop the bar's thread and blank the line; ``lock_wait_s``: how long to wait for
        the line (-1: as long as it takes), after which it is left as it is."""
        self._stop.set()
        self._thread.join()
        if not self._lock.acquire(timeout=lock_wait_s):
            return
        try:
            self._blank()
            self.out.flush()
        finally:
            self._lock.release()

    def _blank(self) -> None:
        """Blank the bar's line and put the cursor at its start (the caller holds the
        lock)."""
        if self._shown:
            self.out.write("\r" + " " * cells(self._shown) + "\r")
            self._shown = ""

    def _terminated(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM (``timeout 60 spoolq wait ID``, a kill from elsewhere) left the bar on
        the terminal, the shell's prompt after it: clear it, then end by the signal, as
        the process would have without this handler.  It may run inside a write this
        thread makes under the bar's lock (the wait's own blank, blocked on a terminal that
        reads nothing: Ctrl-S): it waited for that lock for ever, so after
        :data:`TERM_LOCK_WAIT_S` the line is left as it is."""
        self._clear(TERM_LOCK_WAIT_S)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _run(self) -> None:
        while True:
            self._draw()
            if self._stop.wait(1 / REDRAW_HZ):
                return

    def _draw(self) -> None:
        record = self._record
        if record is None:
            return
        columns = terminal_columns(self.out)
        line = bar_line(record, columns, self._escaping)
        with self._lock:
            if line != self._shown:  # blank what is left of a longer line, not past the edge
                self.out.write("\r" + pad(line, min(cells(self._shown), max(columns - 1, 0))))
                self.out.flush()
                self._shown = line


def terminal_columns(out: TextIO) -> int:
    """The terminal's width (a fresh pty may say 0: then the usual default)."""
    try:
        columns = os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError):
        columns = 0
    return columns or shutil.get_terminal_size().columns


class StateLog:
    """One plain line per state change, for output that is not a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._state: str | None = None
        self._lock = threading.Lock()  # whole lines: a note comes from another thread

    def update(self, record: Record) -> None:
        if record.state.value != self._state:
            self._state = record.state.value
            self._line(f"{record.id}: {record.state.value}")

    def note(self, text: str) -> None:
        self._line(f"spoolq: {text}")

    def _line(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def __enter__(self) -> StateLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class Silent:
    """``--quiet``: the exit code says it all."""

    def update(self, record: Record) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


def watcher_for(out: TextIO, quiet: bool) -> Watcher:
    if quiet:
        return Silent()
    return ProgressBar(out) if out.isatty() else StateLog(out)
