"""A COMPUTE worker's file descriptors 1 and 2, read by the daemon's loop: every byte a
tool writes to them, by ``print``, by C code (``os.write(1, ...)``, a library's
``printf``) or by a child process that inherited them, becomes a JSON log line of
``spoolq.output`` with ``stream`` (``stdout``, ``stderr``) and the ``id`` and ``tool``
of the job, the shape :mod:`processor.capture` gives what FAST tools print.

The design.  :class:`~processor.pool.LocalPool` makes two pipes per worker
(:class:`StdioPipes`).  The worker puts their write ends on fds 1 and 2, makes
``sys.stdout`` and ``sys.stderr`` unbuffered writers to them (:func:`redirect`), and
logs its own lines, unchanged, to a copy of the stderr it was given: they reach the
processor's stderr as before and are never wrapped again.  The processor's loop reads
the read ends as it reads the worker's result socket, and logs each line as output of
the job the slot runs.  Why there, not in the worker: text below Python never passes
through the worker's Python objects, and whatever a worker holds dies with it (a
timeout's ``SIGKILL``, ``os._exit``); the daemon outlives it, so text left without a
newline is logged, as the job's, when the job ends however it ends.  ``print`` takes
the same path (capture is not installed in these workers): one path, so no line is
logged twice and ``print``'s text keeps its place among a child's; the price is that
the loop, not the worker, formats what COMPUTE tools print (about 3 us a line: lines
go straight into the log buffer, as transitions do, see :func:`processor.logs.info`).
Pipes, not sockets: ``open("/dev/stdout")``, which programs do, fails on a socket.

Bounds.  One non-blocking read of at most :data:`READ_BYTES` per readable pipe per
pass of the loop, and the pipes' reads of a pass share a time budget
(:data:`processor.inbox.BULK_BUDGET_S`, 0.5 ms; a pipe left unread for want of it
is read first in the next pass): a tool writing 100 MB costs the loop bounded work
per pass, however many workers write at once, and blocks only itself, on a full
pipe, never the loop, so FAST jobs never wait long behind it (two tools flooding
their pipes with short lines made a FAST ``echo`` take 20 ms instead of 1 when each
pass formatted a 64 KiB read of each).  The log buffer, written once a pass,
holds at most that many lines per pipe.  The daemon holds at most
:data:`~processor.capture.MAX_HELD` characters per stream: text without a newline is
written as a line once it reaches that, and longer lines are cut in lines of that
length (nothing is truncated).  What is not UTF-8 becomes U+FFFD.  Stdout and stderr
are two pipes, so, as for any program piped so, each keeps its order but not their
interleaving.

Whose output it is.  The pool says when each task starts on a slot
(:meth:`StdioPipes.begin`, at submit) and ends (:meth:`StdioPipes.end`, when its
result is read; :meth:`StdioPipes.close`, when its worker's death is handled).  The
worker sends a result only after killing every process its tool started (it is their
subreaper), so all they wrote is in the pipes by then; but the loop's ``poll`` looks
at one descriptor after another, and a read of the result socket takes what came
after the poll, so text written just before the result may not have been seen yet.
So :meth:`StdioPipes.end` looks once more (one ``poll(0)`` on both pipes, the only
syscall a job that writes nothing costs, about 0.5 us of the loop's time); if anything
is there, the slot takes no other task until it is read (:attr:`StdioPipes.draining`:
by the budgeted reads, up to each pipe's capacity, all the job can have written) and
logged as the job's, so a job's last lines may follow its ``done`` line; without
this, that text could be logged as the next task's.  Output read while a
worker runs no task (the worker's own Python-level errors) is logged with no ``id``.
A thread a tool left running is one process with the later jobs: what it writes
through ``sys.stdout`` and ``sys.stderr`` never reaches the pipes but is logged by the
worker as its own job's (:mod:`processor.stray_threads`); what it writes below Python
is logged as the job the worker runs then.  A worker
that died: its tool's orphans are killed by the pool's sweep first, then what is in
its pipes is read, as its job's, and the pipes are closed; an orphan that escaped the
sweep and writes later gets ``EPIPE``.

A job run on Dask has the same pipes, read by the task that started its worker
(:mod:`processor.dask_supervise`), which logs on the Dask worker's stderr.
"""

from __future__ import annotations

import codecs
import fcntl
import io
import os
import select
import sys
from multiprocessing.connection import Connection
from typing import Any, TextIO

from processor import capture, logs
from processor.capture import Held
from processor.stray_threads import StrayThreads

STREAMS = ("stdout", "stderr")
READ_BYTES = 1 << 10
"""One read per readable pipe per pass of the loop: 1 KiB, 32 lines of 32 bytes to
format, about 0.1 ms of the loop's time (1024 empty lines at worst, a few ms)."""
DRAIN_BYTES = 1 << 16
"""A pipe's default capacity: the read when a task ends or its worker dies, should the
pipe's own capacity be unknown."""


class Stream:
    """One pipe's read end, its decoder and the text of a line still arriving."""

    __slots__ = ("decoder", "ended", "fd", "held", "name")

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd  # -1 once closed
        self.ended = False  # read end of file: no writer is left
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = Held()


class StdioPipes:
    """Both pipes of one worker, on the pool's (the loop's) side; their write ends go
    to the worker (:meth:`hand_over`)."""

    def __init__(self) -> None:
        ends: list[int] = []
        try:
            for _ in STREAMS:
                ends += os.pipe2(os.O_CLOEXEC)  # the write end blocks, as a tool expects
        except OSError:
            for fd in ends:
                os.close(fd)
            raise
        self.streams = [Stream(name, ends[2 * i]) for i, name in enumerate(STREAMS)]
        self.write_ends: list[int] = [ends[1], ends[3]]
        self._poller = select.poll()
        for stream in self.streams:
            os.set_blocking(stream.fd, False)
            self._poller.register(stream.fd, select.POLLIN)
        self.job: tuple[str, str] | None = None  # (id, tool) of the task the worker runs
        self._read_since_end = False  # whether a line may be held, or a character cut
        self._owed: dict[int, int] = {}  # fd: bytes of an ended task's output still unread

    def hand_over(self) -> tuple[Connection, Connection]:
        """The write ends, as objects a ``multiprocessing`` worker can be given; whoever
        takes them closes them (once the worker has its copies)."""
        stdout, stderr = self.write_ends
        self.write_ends = []
        return Connection(stdout, readable=False), Connection(stderr, readable=False)

    def begin(self, job_id: str, tool: str) -> None:
        """The worker runs this job from now on: its output is the job's."""
        assert not self._owed, "the last job's output is still being read"
        self.job = (job_id, tool)

    def end(self) -> None:
        """The job's result is read: what its tool wrote is all in the pipes now.

        Nothing there (the usual case): what was left without a newline is logged and
        no more is attributed to the job.  Otherwise :attr:`draining` is True until it
        is read, by :meth:`read` within the loop's budget for output (formatting a full
        pipe of short lines here took the loop 6 ms at each such job's end), and the
        worker must not be given another task meanwhile.
        """
        if self._poller.poll(0):  # the one syscall of a job that wrote nothing
            for stream in self.streams:
                if not stream.ended:
                    self._owed[stream.fd] = _capacity(stream.fd)
            self.settled()
        else:
            self._conclude()

    @property
    def draining(self) -> bool:
        """An ended job's output is still in the pipes (see :meth:`end`)."""
        return bool(self._owed)

    def settled(self) -> None:
        """Look whether the ended job's output is all read, and if so end the job (then
        :attr:`draining` is False): a pipe found empty, or that gave as much as it holds
        (all the job can have written; a thread the tool left running may write on),
        owes no more of it."""
        if self._owed:
            ready = {fd for fd, _ in self._poller.poll(0)}
            for fd in [fd for fd, left in self._owed.items() if fd not in ready or left <= 0]:
                del self._owed[fd]
            if not self._owed:
                self._conclude()

    def read(self, stream: Stream, size: int = READ_BYTES) -> bool:
        """One non-blocking read of ``stream``, logged; False when nothing was there.

        At end of file (no writer left: the worker is dead) :attr:`Stream.ended` is
        set: the caller stops watching it, or a pipe at end of file would wake every
        poll.
        """
        if stream.fd < 0:
            return False  # closed since the loop's poll
        try:
            data = os.read(stream.fd, size)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            if not stream.ended:
                stream.ended = True
                self._poller.unregister(stream.fd)
            return False
        self._read_since_end = True
        self._log(stream, stream.decoder.decode(data))
        if stream.fd in self._owed:
            self._owed[stream.fd] -= len(data)
            self.settled()
        return True

    def close(self) -> None:
        """The worker is gone: read what is left, log it as its job's, close the pipes."""
        self._owed.clear()  # read here, still as the job's
        for stream in self.streams:
            self._drain(stream)
        self._finish()
        for stream in self.streams:
            if stream.fd >= 0:
                os.close(stream.fd)  # (a poll object holds no reference to it)
                stream.fd = -1
        for fd in self.write_ends:  # never handed over: the worker did not start
            os.close(fd)
        self.write_ends = []
        self.job = None

    def _drain(self, stream: Stream) -> None:
        """One read of the pipe's capacity: all it holds, which is all the dead worker's
        processes wrote.  What an orphan that escaped the sweep writes meanwhile is not
        read: reading on while it kept the pipe full held the loop."""
        if stream.fd >= 0:
            self.read(stream, _capacity(stream.fd))

    def _conclude(self) -> None:
        """The job's output is all read: log what was left without a newline."""
        if self._read_since_end:
            self._finish()
        self.job = None

    def _finish(self) -> None:
        self._read_since_end = False
        for stream in self.streams:
            if text := stream.decoder.decode(b"", final=True):  # a character cut short
                self._log(stream, text)
            if stream.held.parts:
                self._emit(stream.name, stream.held.take())

    def _log(self, stream: Stream, text: str) -> None:
        for line in stream.held.feed(text):  # each at most MAX_HELD: cut, never truncated
            self._emit(stream.name, line)

    def _emit(self, stream: str, line: str) -> None:
        fields: dict[str, Any] = {"stream": stream}
        if self.job is not None:
            fields["id"], fields["tool"] = self.job
        logs.info(capture.log, line.removesuffix("\r"), fields)


def _capacity(fd: int) -> int:
    """What the pipe ``fd`` holds at most."""
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return DRAIN_BYTES


def redirect(stdout: int, stderr: int, strays: StrayThreads | None = None) -> TextIO:
    """In the worker: the pipes' write ends become fds 1 and 2, ``sys.stdout`` and
    ``sys.stderr`` write to them unbuffered (what ``strays`` left running writes to
    them is logged as its own job's instead), and the stream returned (a copy of the
    stderr the worker was given) is where its own log lines go."""
    log_fd = os.dup(2)  # not inheritable: a tool's children never get it
    for fd, end in ((1, stdout), (2, stderr)):
        os.dup2(end, fd)  # inheritable, as fds 1 and 2 are
        os.close(end)
    sys.stdout, sys.stderr = unbuffered(1, strays), unbuffered(2, strays)
    # The processor's stderr, which a FAST tool's child may have made non-blocking: each
    # log line waits for room, as the processor's own do.
    return unbuffered(log_fd)


def unbuffered(fd: int, strays: StrayThreads | None = None) -> TextIO:
    """A text stream on ``fd`` as ``python -u`` makes ``sys.stdout``: each write goes
    out at once, so no text waits in the worker for a kill to lose.  UTF-8, and a lone
    surrogate (a file name that is not UTF-8) is escaped rather than failing a print.
    With ``strays`` (fds 1 and 2 of a worker), what a thread an earlier job left running
    writes is logged as that job's output (:mod:`processor.stray_threads`)."""
    return io.TextIOWrapper(WholeWrites(fd, strays), encoding="utf-8",
                            errors="backslashreplace", write_through=True)


class WholeWrites(io.RawIOBase):
    """Writes to ``fd`` (not closed with this object) that each write all they are given.

    A ``TextIOWrapper`` ignores how much its raw stream wrote, so a short write lost
    the rest of the text: one a signal cut short, and, on a full pipe, every write
    once a tool's child had made the pipe non-blocking (``O_NONBLOCK`` belongs to the
    pipe's open file, which the worker shares with its children; some programs set it
    on their stdout).  Here a write that would block waits for the pipe instead.
    """

    def __init__(self, fd: int, strays: StrayThreads | None = None) -> None:
        super().__init__()
        self._fd = fd
        self._strays = strays

    @property
    def name(self) -> int:
        return self._fd  # as a FileIO's, which a TextIOWrapper's name is

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int = -1, /) -> bytes:
        raise io.UnsupportedOperation("read")

    def write(self, data: Any) -> int:
        if self._strays is not None and (owner := self._strays.owner()) is not None:
            self._strays.write(STREAMS[self._fd - 1], owner, bytes(data))
            return memoryview(data).nbytes
        with memoryview(data) as whole, whole.cast("B") as view:
            done = 0
            while done < len(view):
                try:
                    done += os.write(self._fd, view[done:])
                except BlockingIOError:
                    waiting = select.poll()  # until the pipe has room (or its reader
                    waiting.register(self._fd, select.POLLOUT)  # is gone: EPIPE next)
                    waiting.poll()
            return done
