"""How much of its memory cap a COMPUTE worker has left, checked after each job.

``SPOOL_WORKER_MEMORY_MB`` caps a worker's address space (``RLIMIT_AS``, see
:func:`processor.worker.prepare_process`).  What a job keeps when it ends (a
module-level cache, a fragmented heap, a thread's malloc arena) stays in that
address space, so a tool that leaks without ever reaching the cap itself makes a
later, innocent job of the same worker fail "out of memory".  :class:`MemoryBudget`
notes the address space the worker uses once it is ready (``VmSize``), and after
each job says whether the room left under the cap is less than half the room it
had then: the worker then retires, as after ``SPOOL_WORKER_MAX_JOBS``, and a fresh
one takes its place.  (Celery's ``worker_max_memory_per_child`` does the same on
resident memory; here the cap is on address space, so that is what is measured.)

Why half the headroom of a ready worker, not a share of the cap: a ready worker
already maps about 318 MB (numpy, pandas, the tools), so a line drawn on the cap
(say 80% of it) would retire, under a tight cap, a worker that kept nothing, after
every job.  Measured from where the worker started, only what its jobs left
counts, and every job of a worker is promised at least half the room its first
job had.  A worker retires after every job only when one job alone leaves more
than half that room mapped; the next job on that worker would have less than
half, so it is replaced, and the line it logs each time (what it used, the cap)
says the cap is too tight for what that tool keeps.

Cost: one ``fstat`` and one ``pread`` of ``/proc/self/statm`` per job, about 3 us,
and only with a cap set.  The file stays open, and the ``fstat`` checks that the
descriptor is still it: a tool may close every descriptor, and another file take
that number (it is opened again then, about 7 us).
"""

from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


class _Statm:
    """``/proc/self/statm``, kept open: its first number is ``VmSize``, in pages."""

    def __init__(self) -> None:
        self.fd = -1
        self.key = (0, 0)  # (st_dev, st_ino) of the file opened

    def vm_size(self) -> int:
        """This process's address space in use, in bytes; 0 if unreadable."""
        try:
            if not self._ours():
                self._open()
            return int(os.pread(self.fd, 64, 0).split(None, 1)[0]) * _PAGE
        except (OSError, ValueError, IndexError):  # no /proc, out of descriptors...
            return 0  # never a reason to retire

    def _ours(self) -> bool:
        if self.fd < 0:
            return False
        try:
            st = os.fstat(self.fd)
        except OSError:  # closed by a tool
            return False
        return (st.st_dev, st.st_ino) == self.key

    def _open(self) -> None:
        # Not closed first: a descriptor that is no longer ours is a tool's (or nothing).
        self.fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        self.key = (st.st_dev, st.st_ino)


class MemoryBudget:
    """The address space a worker may keep between jobs under its cap.

    Made once the worker is ready, before its first job: :attr:`ready` is what it
    uses then, and a job that leaves more than :attr:`line` in use retires it.
    """

    def __init__(self, memory_mb: int) -> None:
        self.cap = memory_mb * MIB
        self._statm = _Statm()
        self.ready = self._statm.vm_size() if self.cap else 0
        # Half the headroom left at most: used past (cap + ready) / 2.  No line when
        # there is no cap, no /proc, or no headroom to begin with (every job would fail).
        self.line = (self.cap + self.ready) // 2 if 0 < self.ready < self.cap else 0

    def exhausted(self) -> int:
        """The address space in use if more than :attr:`line`, else 0 (no line: 0)."""
        if not self.line:
            return 0
        used = self._statm.vm_size()
        return used if used > self.line else 0
