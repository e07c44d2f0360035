"""Descriptors held back so that the records of runs in flight can always be written.

Every run holds its claim's descriptor (the lease) until its record is published,
and publishing opens a staging file (and, under ``SPOOL_FSYNC=always``, its folder).
Out of descriptors (a low ``RLIMIT_NOFILE``, a FAST tool leaking them, the system's
file table full) the claims in flight could hold every one of them: no record could
be written, so no lease given back, and the I/O pause never ended.  The processor
holds a few descriptors of ``/dev/null`` back: it gives them up to write the records
that waited, and claims only once it could take them again, so claims stop short of
the last descriptors instead of taking them.
"""

from __future__ import annotations

import os

RESERVE_FDS = 4
"""A record's publish opens one file and at most one folder at a time; twice that."""


class DescriptorReserve:
    """``size`` descriptors held back (see the module docstring); loop thread only."""

    def __init__(self, size: int = RESERVE_FDS) -> None:
        self.size = size
        self._fds: list[int] = []
        self.refill()

    @property
    def full(self) -> bool:
        return len(self._fds) >= self.size

    def refill(self) -> bool:
        """Take back what was given up; False while the process is short of descriptors."""
        fds = self._fds
        while len(fds) < self.size:
            try:
                fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return False
        return True

    def give_up(self) -> None:
        """Close the held descriptors: the writes that follow may use them."""
        fds = self._fds
        while fds:
            os.close(fds.pop())
