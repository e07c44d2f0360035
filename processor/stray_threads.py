"""What threads a COMPUTE tool left running print in its worker after its job ended.

A worker's fds 1 and 2 are pipes the processor reads as the output of the job the
worker runs (:mod:`processor.stdio_pipes`): one process, so the pipes cannot tell a
thread a tool left behind from the next job's tool, and what such a thread printed
during a later job was logged as that job's.  The worker notes the threads each job
leaves running (:meth:`StrayThreads.job_started`, :meth:`StrayThreads.job_ended`);
what they write through ``sys.stdout`` and ``sys.stderr`` (``print``, logging
handlers on them, tqdm) is logged by the worker itself as a ``spoolq.output`` line of
the job that started them, cut into lines as the processor cuts the pipes' text.
Bytes they write below Python (C code, child processes) still reach the pipes.

A thread such a thread starts (a re-armed ``threading.Timer``, a helper it spawns) is
that job's too, from its start (:meth:`StrayThreads.watch_starts`), not the job
running when it started.

A worker with no such thread pays one truth test per write and per thread start.
"""

from __future__ import annotations

import codecs
import logging
import threading
from typing import Any

from processor.capture import Held

log = logging.getLogger("spoolq.output")


class StrayThreads:
    """The live threads earlier jobs of this worker left running, and whose they are."""

    def __init__(self) -> None:
        self._owners: dict[threading.Thread, tuple[str, str]] = {}  # -> (job id, tool)
        self._before: set[threading.Thread] = set()
        self._held: dict[tuple[threading.Thread, str], tuple[Any, Held]] = {}
        self._starting: set[threading.Thread] = set()  # owned, in Thread.start still
        self._lock = threading.Lock()
        log.setLevel(logging.INFO)  # a tool's text is kept whatever SPOOL_LOG_LEVEL says

    def watch_starts(self) -> None:
        """From now on in this process, a thread that a job's leftover thread starts is
        that job's from its start (``threading.Thread.start`` notes it)."""
        start = threading.Thread.start
        strays = self

        def start_owned(thread: threading.Thread) -> None:
            owner = strays.owner()
            if owner is None:
                start(thread)
                return
            with strays._lock:
                # Those ended go now, not at the next job: a Timer re-armed every 20 ms
                # while the worker idles (or runs one long job) left 50 a second.
                strays._forget_ended()
                strays._owners[thread] = owner
                strays._starting.add(thread)
            try:
                start(thread)
            except BaseException:
                with strays._lock:
                    strays._owners.pop(thread, None)
                raise
            finally:
                with strays._lock:
                    strays._starting.discard(thread)

        threading.Thread.start = start_owned  # type: ignore[method-assign, assignment]

    def job_started(self) -> None:
        """Before a job: the threads alive now are not its own; forget the ended ones."""
        self._before = set(threading.enumerate())
        with self._lock:
            self._forget_ended()

    def _forget_ended(self) -> None:
        """Forget the owned threads that ended (under the lock).  One its owner is still
        starting is not alive yet, though it may have its ident already."""
        for thread in [t for t in self._owners
                       if not t.is_alive() and t not in self._starting]:
            del self._owners[thread]
            for stream in ("stdout", "stderr"):
                self._held.pop((thread, stream), None)

    def job_ended(self, job_id: str, tool: str) -> None:
        """After a job: each thread it started that still runs is that job's (but those
        an earlier job's leftovers started meanwhile, which are that job's)."""
        with self._lock:
            for thread in threading.enumerate():
                if thread not in self._before and thread.is_alive():
                    self._owners.setdefault(thread, (job_id, tool))

    def owner(self) -> tuple[str, str] | None:
        """The job that left the calling thread running, if it is such a thread."""
        if not self._owners:
            return None
        return self._owners.get(threading.current_thread())

    def job_of(self, running: tuple[str, str] | None) -> tuple[str, str] | None:
        """Whose a line the calling thread logs now is: the job that left the thread
        running; else ``running``'s (the job running now) for its own threads, the main
        thread that runs its tool and those it started; None for the worker's own."""
        thread = threading.current_thread()
        if self._owners and (owner := self._owners.get(thread)) is not None:
            return owner
        if thread in self._before and thread is not threading.main_thread():
            return None  # the worker's lifeline, its deadman, a stray with no owner
        return running

    def write(self, stream: str, owner: tuple[str, str], data: bytes) -> None:
        """Log ``data``, written by the calling thread to ``stream``, as ``owner``'s."""
        key = (threading.current_thread(), stream)
        with self._lock:
            entry = self._held.get(key)
            if entry is None:
                entry = self._held[key] = (
                    codecs.getincrementaldecoder("utf-8")(errors="replace"), Held())
            decoder, held = entry
            lines = held.feed(decoder.decode(data))
        for line in lines:
            log.info(line.removesuffix("\r"), extra={"fields": {
                "stream": stream, "id": owner[0], "tool": owner[1]}})
