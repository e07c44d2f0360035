"""``python -m bad_sector_processor``: the real processor, on a disk with one bad sector.

Every ``os.read`` of a file whose path holds ``BAD_SECTOR_NAME`` fails with EIO while
the file ``BAD_SECTOR_FLAG`` exists, as a read of a sector gone bad does once its page
has left the cache: whatever name the job file has by then (``pending/``, ``running/``,
a cancel's staging name in ``stage/``, which strace's ``-P`` cannot name ahead).  Then
``processor.__main__.main`` runs as ``python -m processor`` would.

Not a test module; the tests start it through relkit's ``Daemon`` (``module=``; this
folder is on the daemon's ``PYTHONPATH``).
"""

from __future__ import annotations

import errno
import os
import sys

from processor import __main__ as processor_main

NAME_ENV = "BAD_SECTOR_NAME"
FLAG_ENV = "BAD_SECTOR_FLAG"


def _break(name: str, flag: str) -> None:
    read = os.read

    def failing_read(fd: int, size: int, /) -> bytes:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if name in path and os.path.lexists(flag):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return read(fd, size)

    os.read = failing_read


def main() -> int:
    _break(os.environ[NAME_ENV], os.environ[FLAG_ENV])
    return processor_main.main()


if __name__ == "__main__":
    sys.exit(main())
