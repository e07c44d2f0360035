"""What :func:`spool.cli.lookout.absence` reads in ``owners/``: when no processor seems
to be running on a spool, and when one is starting."""

from __future__ import annotations

import time
from pathlib import Path

from spool.cli.lookout import NEW_LOCK_S, STARTING_S, absence
from spool.layout import Layout
from spool.lease import OwnerLease


def test_a_processor_holding_its_lock_before_its_first_status_is_no_absence(
        root: Path) -> None:
    """A processor takes its lock, then runs recovery and starts its executor (seconds
    for a Dask cluster), and writes its status file with its first heartbeat only: in
    between, ``spoolq wait`` said no processor seemed to be running."""
    layout = Layout(root)
    assert absence(layout, time.time()) is not None  # nothing in owners/
    lease = OwnerLease(layout.owner_lock("starting-1"))
    try:
        assert absence(layout, time.time()) is None  # a new lock file: not even tried
        assert absence(layout, time.time() + NEW_LOCK_S + 1) is None  # tried: held
    finally:
        lease.release()
    later = time.time() + NEW_LOCK_S + 1
    assert absence(layout, later) is not None  # its lock let go, no status file


def test_a_start_stuck_past_its_time_is_said(root: Path) -> None:
    """The lock is taken before the tools load (processor.lifecycle): a start stuck in a
    tools module's import held it with no status file for ever, and ``spoolq wait`` said
    nothing, where it said "no status file" after 3 s before (h413)."""
    layout = Layout(root)
    lease = OwnerLease(layout.owner_lock("stuck-1"))
    try:
        assert absence(layout, time.time() + STARTING_S - 5) is None, "still starting"
        said = absence(layout, time.time() + STARTING_S + 1)
        assert said is not None and said.certain, said
        assert said.reason.startswith("processor stuck-1 holds its lock and has written no "
                                      "status file 1.0m after taking it"), said.reason
    finally:
        lease.release()
