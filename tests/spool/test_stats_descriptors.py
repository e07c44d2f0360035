"""Stats out of descriptors never leave a live processor out (call it down).

:func:`spool.stats.processors` raises SpoolIOError when a processor's owner lock cannot
be opened for lack of descriptors.  Its status file, read right after, was read with
no such care: unopened, it read as none, and the live processor holding its lock was
left out (``alive: false``, ``spoolq_processor_up 0``: an alert for the wrong daemon).
The status file's open is made to fail, as a real limit cannot aim at it alone.
"""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime

import pytest

from spool import entries
from spool.errors import SpoolIOError
from spool.lease import OwnerLease
from spool.models import OwnerStatus
from spool.reader import SpoolReader
from spool.transitions import Spool
from spool.version import version

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_a_live_processor_whose_status_cannot_be_opened_is_not_left_out(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = spool.layout
    now = datetime.now(UTC)
    lease = OwnerLease(layout.owner_lock("live-1"))
    try:
        layout.owner_status("live-1").write_text(OwnerStatus(
            owner="live-1", pid=os.getpid(), host="h", version=version(), started_at=now,
            heartbeat_at=now).model_dump_json())
        reader = SpoolReader(layout)
        assert [s.owner for s in reader.processors()] == ["live-1"]
        real = entries.open_nofollow
        status_path = os.fspath(layout.owner_status("live-1"))

        def short_for_status(path: str | os.PathLike[str]) -> int:
            if os.fspath(path) == status_path:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), status_path)
            return real(path)

        monkeypatch.setattr(entries, "open_nofollow", short_for_status)
        with pytest.raises(SpoolIOError, match="Too many open files"):
            reader.processors()
    finally:
        lease.release()
