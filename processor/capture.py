"""A tool's own output as log lines: what it writes to ``sys.stdout`` and ``sys.stderr``
(``print``, ``tqdm``, a library's chatter) becomes JSON lines like every other.

Installed in the processor, for FAST tools (COMPUTE workers, on the local pool or on
Dask, write to pipes instead: see below).  Each line is one entry of
logger ``spoolq.output``: the text as ``msg``, ``stream`` (``stdout`` or ``stderr``),
and the ``id`` and ``tool`` of the job the writing thread runs, when it runs one
(:func:`begin`, :func:`end`, from :func:`processor.runner.run_tool`).  Text is held per
thread until its newline, so two FAST tools printing at once never share a line; what
is left without one is written when the job ends, and text that reaches
:data:`MAX_HELD` characters without one is written as a line then (a tool drawing dots
for ever costs bounded memory, and each write costs its own length, never the length
of what is held).  A longer line is cut in lines of that length, never truncated.
Bytes written to ``sys.stdout.buffer`` are decoded as UTF-8 (what is not UTF-8
becomes U+FFFD) and logged the same way.

What this cannot see is text written below Python, straight to file descriptors 1 and
2: by a tool's child process that inherited them, or by C code.  For COMPUTE tools
that is seen all the same: a worker's fds 1 and 2 are pipes its parent reads
(:mod:`processor.stdio_pipes`), and this module is not installed in the worker
(``print`` goes to those pipes too, so no line is logged twice, and text a worker held
is never lost with it).  What a FAST tool's children or C code write still reaches the
processor's own stdout and stderr as plain text (redirecting those would hide a Python
fatal error of the processor itself).

A FAST tool that replaces ``sys.stdout`` or ``sys.stderr`` (silencing a library the
quick way) and leaves them so would swallow every later FAST tool's output, and one
that closes descriptors 0 to 2 (as daemonising code does) would leave the processor's
own log dark, as would one that turns ``logging`` off; one that calls ``os.chdir`` or
``os.umask`` would move every later FAST job: when the last job running ends, the
streams :func:`install` put in place are put back (with a warning naming that job),
and so are the descriptors, the log's settings (:func:`processor.logs.repair`), the
warnings filters, the working directory and the umask.

A thread a FAST tool starts (and the threads that one starts) writes and logs as the
job's, as long as it runs (:func:`_start_as_job`).

Nothing here costs a tool that prints nothing more than two thread-local assignments,
a lock and five syscalls (``fstat``, ``umask``, ``fchdir``) per job, and a thread-local
look per thread started; no thread.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import io
import logging
import os
import stat
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from processor import logs
from processor.kept import KeptSettings
from processor.logs import MAX_TEXT

log = logging.getLogger("spoolq.output")
_state = threading.local()  # job: (id, tool) | None; held: {stream: Held}; busy: bool;
# decoders: {stream: UTF-8 decoder of what was written to its buffer}
# Threads jobs' threads started (_start_as_job), held weakly: one that ended is freed
# at once, as it was before (no cycle, no strong reference left to it).
_job_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_job_threads_lock = threading.Lock()
MAX_HELD = MAX_TEXT
"""Characters held without a newline before they are written as a line: the log
keeps no more of a line than this anyway."""


class _Streams:
    """The streams :func:`install` put in place, copies of descriptors 0 to 2, the
    working directory and umask as they were then, and how many jobs run: a tool's
    change is undone only once no job runs, so one that redirects its output for a
    while (``contextlib.redirect_stdout``) keeps it while it runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        # Runs abandoned while their tools still ran (by id): counted out of ``running``
        # then, not again when their threads end (see abandon).
        self.abandoned: Counter[str] = Counter()
        self.installed: tuple[Any, Any] | None = None
        # fd -> a copy of it (not inherited), and the (device, inode) it was
        self.fds: dict[int, tuple[int, tuple[int, int]]] = {}
        self.kept: KeptSettings | None = None  # working directory, umask, log, warnings

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            if self.kept is not None and self.kept.warnings is None:
                # At the first job, when the daemon's start-up (Dask's import among it)
                # has set the filters it wants.
                self.kept.keep_warnings()

    def abandon(self, job: tuple[str, str]) -> None:
        """The run of ``job`` ended while its tool still runs (a FAST timeout: its thread
        cannot be killed): no job running, as the lane counts it.  Counted as one, its
        thread kept every later FAST job from having what tools change put back, for as
        long as the tool ran (the working directory one moved to, logging turned off:
        the processor's log dark for minutes, QA)."""
        with self.lock:
            if self.running <= 0:
                return
            self.abandoned[job[0]] += 1
        self.leave(job, counted=False)

    def leave(self, job: tuple[str, str] | None, *, counted: bool = True) -> None:
        with self.lock:
            if counted and self.abandoned and job is not None and self.abandoned[job[0]] > 0:
                self.abandoned[job[0]] -= 1  # counted out when its run was abandoned
                if not self.abandoned[job[0]]:
                    del self.abandoned[job[0]]
            else:
                self.running = max(0, self.running - 1)
            installed = self.installed
            if self.running or installed is None:
                return
            for fd, (copy, was) in self.fds.items():
                _put_back(fd, copy, was)
            if self.kept is not None:
                self.kept.restore()
            if sys.stdout is installed[0] and sys.stderr is installed[1]:
                return
            sys.stdout, sys.stderr = installed
        fields = {"id": job[0], "tool": job[1]} if job else {}
        logging.getLogger("spoolq.processor").warning(
            "a FAST tool replaced sys.stdout or sys.stderr and left it so; put back",
            extra={"fields": fields})


_streams = _Streams()


class _ThreadStart:
    """``Thread.start`` as :func:`install` found it, and its wrapper
    (:func:`_start_as_job`), told by identity: ``functools.wraps`` copies attributes, so a
    library's wrapper on ours (sentry_sdk.init() in a tool module) looked like ours.  One
    put on ours stays, with ours under it, and is not wrapped again."""

    def __init__(self) -> None:
        self.original: Callable[[threading.Thread], None] | None = None
        self.wrapper: Callable[[threading.Thread], None] | None = None


_thread_start = _ThreadStart()


def _put_back(fd: int, copy: int, was: tuple[int, int]) -> None:
    """Descriptor ``fd`` (0 to 2) as it was, unless what holds it now is someone's.

    A number a tool closed may have been taken since, by a claim the loop made or a
    file the tool keeps: its holder keeps it, as putting the old file in its place
    would close the holder's under it (the log lines written meanwhile are lost
    either way).  A closed one is taken back by ``F_DUPFD``, which gives another
    number, closed at once, should a thread take it first; one pointed at a device
    (``/dev/null``, as daemonising code does) is put back.
    """
    try:
        st = os.fstat(fd)
    except OSError:
        with contextlib.suppress(OSError):
            got = fcntl.fcntl(copy, fcntl.F_DUPFD, fd)
            if got != fd:
                os.close(got)
        return
    if (st.st_dev, st.st_ino) != was and stat.S_ISCHR(st.st_mode):
        with contextlib.suppress(OSError):
            os.dup2(copy, fd)


class Held:
    """A line's text so far, in the pieces it was written in (joined once, when written)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def take(self, last: str = "") -> str:
        text = "".join(self.parts) + last
        self.parts.clear()
        self.size = 0
        return text

    def feed(self, text: str) -> list[str]:
        """Add ``text``; the lines it completes, and the held text once it reaches
        :data:`MAX_HELD`, each cut in lines of at most that much (never truncated)."""
        lines: list[str] = []
        if "\n" in text:
            lines = text.split("\n")
            lines[0] = self.take(lines[0])
            text = lines.pop()
            if any(len(line) > MAX_HELD for line in lines):
                lines = [line[start:start + MAX_HELD] for line in lines
                         for start in range(0, max(len(line), 1), MAX_HELD)]
        if text:
            self.parts.append(text)
            self.size += len(text)
            if self.size >= MAX_HELD:  # written in lines the log keeps whole
                held = self.take()
                cut = len(held) - len(held) % MAX_HELD
                lines.extend(held[start:start + MAX_HELD] for start in range(0, cut, MAX_HELD))
                if cut < len(held):
                    self.parts.append(held[cut:])
                    self.size = len(held) - cut
        return lines


def installed() -> bool:
    """Whether :func:`install` routes this process's ``sys.stdout`` and ``sys.stderr``
    (else :func:`begin` and :func:`end` have nothing to attribute: see :func:`install`)."""
    return _streams.installed is not None


def current_job() -> tuple[str, str] | None:
    """The (id, tool) of the job the calling thread runs, if it runs one."""
    return getattr(_state, "job", None)


def begin(job_id: str, tool: str) -> None:
    """The calling thread runs this job now: its output is the job's."""
    _streams.enter()
    _state.job = (job_id, tool)


def abandoned(job_id: str, tool: str) -> None:
    """The run of ``job_id`` ended while its tool still runs on its thread (see
    :meth:`_Streams.abandon`); its thread's :func:`end` comes when the tool returns."""
    _streams.abandon((job_id, tool))


def end() -> None:
    """The calling thread's job is over: write what it left without a newline."""
    _write_held()
    job, _state.job = getattr(_state, "job", None), None
    _streams.leave(job)


def _write_held() -> None:
    """Write what the calling thread left without a newline."""
    decoders = getattr(_state, "decoders", None)
    if decoders:
        for stream, decoder in list(decoders.items()):
            if text := decoder.decode(b"", final=True):  # a character cut short
                _held_line(stream).parts.append(text)
        decoders.clear()
    held = getattr(_state, "held", None)
    if held:
        for stream, line in list(held.items()):
            if line.parts:
                _emit(stream, line.take())
        held.clear()


def _start_as_job(start: Callable[[threading.Thread], None]
                  ) -> Callable[[threading.Thread], None]:
    """``threading.Thread.start`` for :func:`install`: a thread started by a thread that
    runs a job (a FAST tool's helper, a ``Timer`` it arms, and theirs) writes and logs
    as that job's, also after the job ended, as a COMPUTE job's leftover thread does
    (:mod:`processor.stray_threads`).

    Such a thread is a daemon, and :func:`threads_left` tells of it: one the tool left
    running (a ``Timer`` armed for later, a helper that sleeps, a ``ThreadPoolExecutor``'s
    worker busy with a task) kept the interpreter's exit waiting after the processor had
    stopped, for good for one that never ends, deaf to SIGTERM by then.  At a stop what
    FAST tools left is ended, their processes killed (:func:`processor.proctree
    .kill_tool_processes`), their threads with the process."""
    def start_as_job(thread: threading.Thread) -> None:
        job = getattr(_state, "job", None)
        if job is not None:
            thread.run = _run_as(thread, job, thread.run)  # type: ignore[method-assign]
            thread.daemon = True
            with _job_threads_lock:
                _job_threads.add(thread)
        start(thread)

    return start_as_job


def threads_left() -> bool:
    """Whether a thread that a job's thread started still runs: the processor's exit then
    waits for none (:meth:`processor.startup.BackgroundImports.exit_now_if_running`)."""
    with _job_threads_lock:
        return any(t.is_alive() for t in _job_threads)


def _run_as(thread: threading.Thread, job: tuple[str, str], run: Callable[[], None]
            ) -> Callable[[], None]:
    def run_as_job() -> None:
        _state.job = job
        try:
            run()
        finally:
            _write_held()
            # thread -> this -> its bound run -> thread: a cycle only the collector
            # would free (a Timer's function and arguments with it), as Thread.run
            # drops its target for the same reason.
            vars(thread).pop("run", None)

    return run_as_job


def _held_line(stream: str) -> Held:
    held: dict[str, Held] | None = getattr(_state, "held", None)
    if held is None:
        held = _state.held = {}
    line = held.get(stream)
    if line is None:
        line = held[stream] = Held()
    return line


class ToolOutput(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: each line written is logged."""

    def __init__(self, name: str, raw: TextIO) -> None:
        super().__init__()
        self.name = name
        self.raw = raw  # the stream it replaced: for what logging itself writes
        self.buffer = ToolBytes(self)  # as a TextIOWrapper's: for tools that write bytes

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.raw.fileno()  # e.g. faulthandler, subprocess: the real descriptor

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        if getattr(_state, "busy", False):  # logging itself reporting trouble: as it was
            self.raw.write(text)
            return len(text)
        for line in _held_line(self.name).feed(text):
            _emit(self.name, line)
        return len(text)


class ToolBytes(io.RawIOBase):
    """``sys.stdout.buffer`` (or stderr's) of a :class:`ToolOutput`: bytes decoded as
    UTF-8, per thread, and logged as its text is."""

    def __init__(self, text: ToolOutput) -> None:
        super().__init__()
        self.text = text

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.text.fileno()

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        decoders = getattr(_state, "decoders", None)
        if decoders is None:
            decoders = _state.decoders = {}
        decoder = decoders.get(self.text.name)
        if decoder is None:
            decoder = decoders[self.text.name] = codecs.getincrementaldecoder("utf-8")(
                errors="replace")
        self.text.write(decoder.decode(bytes(data)))
        return size


def _emit(stream: str, line: str) -> None:
    job = getattr(_state, "job", None)
    fields: dict[str, Any] = {"stream": stream}
    if job is not None:
        fields["id"], fields["tool"] = job
    _state.busy = True
    try:
        log.info(line.removesuffix("\r"), extra={"fields": fields})
    finally:
        _state.busy = False


def install() -> tuple[TextIO, TextIO]:
    """Route ``sys.stdout`` and ``sys.stderr`` through log lines; what they were."""
    saved = (sys.stdout, sys.stderr)
    log.setLevel(logging.INFO)  # a tool's text is kept whatever SPOOL_LOG_LEVEL says
    if not isinstance(sys.stdout, ToolOutput):
        sys.stdout = ToolOutput("stdout", sys.stdout)
    if not isinstance(sys.stderr, ToolOutput):
        sys.stderr = ToolOutput("stderr", sys.stderr)
    _streams.installed = (sys.stdout, sys.stderr)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            _streams.fds[fd] = (os.dup(fd), (st.st_dev, st.st_ino))
    _streams.kept = KeptSettings()
    logs.tag_lines_with(current_job)  # a FAST tool's logging lines name its job too
    if _thread_start.wrapper is None:  # and its threads'
        _thread_start.original = threading.Thread.start
        _thread_start.wrapper = _start_as_job(_thread_start.original)
        threading.Thread.start = _thread_start.wrapper  # type: ignore[method-assign, assignment]
    return saved


def uninstall(saved: tuple[TextIO, TextIO]) -> None:
    """Put back the streams :func:`install` replaced, after writing what is held."""
    _streams.installed = None
    logs.tag_lines_with(None)
    if threading.Thread.start is _thread_start.wrapper:  # else wrapped since: it stays
        threading.Thread.start = _thread_start.original  # type: ignore[method-assign, assignment]
        _thread_start.wrapper = None
    for copy, _ in _streams.fds.values():
        os.close(copy)
    _streams.fds.clear()
    if _streams.kept is not None:
        _streams.kept.close()
        _streams.kept = None
    end()
    sys.stdout, sys.stderr = saved
