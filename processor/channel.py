"""The link between the processor and one COMPUTE worker: two pipes, tasks one way,
messages (results, progress) the other, in ``multiprocessing.Connection``'s framing.

Two pipes rather than one socket pair: reading a Unix socket frees the sender's
buffer space, and the kernel then wakes whoever sleeps on the sender's socket,
readers too.  The worker, which sends its result and at once waits on the same
socket for its next task, was so woken for nothing by each result the processor
read: 1.6 to 1.8 voluntary context switches a job instead of one, and a
wake-up the processor paid for.  A pipe wakes a writer only when it was full (the
worker: 0.95 switches a job).  W1's no-op COMPUTE jobs, JOB_NUM=2 on 2 vCPUs shared
with other work (load 5 to 12), medians of interleaved runs: processor and workers
541 -> 473 us CPU a job with the drops made meanwhile (4 runs of 3 x 2,000 jobs),
460 -> 412 with them made while the processor was stopped (6 runs of 3,000); a
ping-pong of 100-byte messages between two processes: 8.5 -> 5.5 us of the sender's
CPU a round trip, 28-42 -> 18-22 us of wall time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

TASK_PIPE_BYTES = 256 << 10
"""Room asked for in the task pipe (a pipe holds 64 KiB by default).  The processor's
loop writes a task blocking; the socket pair this replaced took about 200 KiB before
a write waited, so a task of 64 to 200 KiB to a worker not reading yet (starting,
putting its process back, stopped) would hold the loop, and every FAST job, heartbeat
and stop with it, until the worker read or the task's deadline killed it.  256 KiB is
64 pages of the user's pipe allowance (fs.pipe-user-pages-soft, 16,384 by default),
charged only as the task pipe's ring, not allocated until written."""


class ParentEnd:
    """The processor's end: reads without blocking (the loop's), writes blocking."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        os.set_blocking(read_fd, False)
        self.read_fd, self.write_fd = read_fd, write_fd
        try:
            self.room = fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
        except OSError:  # not a pipe (a test's socket): no write is sure not to wait
            self.room = 0
        """What a write into the empty task pipe takes without waiting."""

    def fileno(self) -> int:
        """The end to watch for readability."""
        return self.read_fd

    def recv_into(self, buffer: bytearray) -> int:
        """What has arrived, up to ``len(buffer)`` bytes, into ``buffer``; 0 at end of
        file (the worker is gone); BlockingIOError when nothing is there."""
        return os.readv(self.read_fd, [buffer])

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``, waiting for room (OSError once the worker is gone)."""
        _write_all(self.write_fd, data)

    def send_aside(self, data: bytes, on_error: Callable[[], None]) -> threading.Thread | None:
        """Write ``data``: at once when the empty task pipe holds it all (no wait), else
        on a thread of its own, through a duplicate of the descriptor (closing this end
        meanwhile cannot hand the thread's writes to a file that reuses its number), and
        ``on_error`` is called there if the worker is gone.  A worker that stopped reading
        (SIGSTOP, a debugger) held the loop thread, every FAST job, heartbeat and stop
        with it, until the task's deadline killed the worker."""
        def write(fd: int) -> None:
            try:
                _write_all(fd, data)
            except OSError:
                on_error()

        if len(data) <= self.room:
            write(self.write_fd)
            return None
        fd = os.dup(self.write_fd)

        def write_aside() -> None:
            try:
                write(fd)
            finally:
                os.close(fd)

        try:
            thread = threading.Thread(target=write_aside, name="spoolq-task-write",
                                      daemon=True)
            thread.start()
        except BaseException:
            os.close(fd)
            raise
        return thread

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class WorkerEnd:
    """The worker's end, as much of a ``Connection`` as the worker uses; it crosses to
    the worker as its two ``Connection`` objects (each a descriptor handed over)."""

    def __init__(self, tasks: Connection, messages: Connection) -> None:
        self.tasks, self.messages = tasks, messages

    def recv(self) -> Any:
        return self.tasks.recv()

    def send_bytes(self, data: bytes) -> None:
        self.messages.send_bytes(data)

    def close(self) -> None:
        self.tasks.close()
        self.messages.close()


def _write_all(fd: int, data: bytes) -> None:
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])


def open_channel() -> tuple[ParentEnd, WorkerEnd]:
    """A new link: the processor's end and the worker's (to hand over, then close here)."""
    task_r, task_w = os.pipe2(os.O_CLOEXEC)
    try:
        # Best effort: a user past its pipe allowance (EPERM) keeps 64 KiB.
        with contextlib.suppress(OSError):
            fcntl.fcntl(task_w, fcntl.F_SETPIPE_SZ, TASK_PIPE_BYTES)
        message_r, message_w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        os.close(task_r)
        os.close(task_w)
        raise
    return (ParentEnd(message_r, task_w),
            WorkerEnd(Connection(task_r, writable=False), Connection(message_w, readable=False)))


def frame_header(size: int) -> bytes:
    """Connection's framing, which the worker reads: see :func:`complete_messages`."""
    if size <= 0x7FFFFFFF:
        return size.to_bytes(4, "big")
    return b"\xff\xff\xff\xff" + size.to_bytes(8, "big")


def complete_messages(unread: bytearray) -> list[Any]:
    """Take every whole message off the front of ``unread`` (Connection's framing:
    a signed 4-byte big-endian length, or -1 then an 8-byte one, then a pickle)."""
    messages: list[Any] = []
    pos = 0
    with memoryview(unread) as view:
        while len(unread) - pos >= 4:
            size, head = int.from_bytes(view[pos:pos + 4], "big", signed=True), 4
            if size == -1:
                if len(unread) - pos < 12:
                    break
                size, head = int.from_bytes(view[pos + 4:pos + 12], "big"), 12
            end = pos + head + size
            if len(unread) < end:
                break
            messages.append(pickle.loads(view[pos + head:end]))
            pos = end
    del unread[:pos]
    return messages
