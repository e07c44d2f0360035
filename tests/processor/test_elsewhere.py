"""Which tools the other live processors offer (:mod:`processor.elsewhere`): a job of
a tool this processor does not load is left to them only while one of them, alive and
claiming, offers it (h394)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from processor.elsewhere import OtherCatalogues
from spool.fsops import Mover
from spool.layout import Layout
from spool.lease import HEARTBEAT_STALE_S, OwnerLease
from spool.models import OwnerStatus
from spool.settings import FsyncMode


def _publish(layout: Layout, owner: str, tool: str, **fields: object) -> OwnerLease:
    now = datetime.now(UTC)
    status = OwnerStatus(owner=owner, pid=os.getpid(), host="test", version="0",
                         started_at=now, heartbeat_at=now,
                         tools=[{"name": tool, "execution_mode": "compute"}])
    status = status.model_copy(update=fields)
    lease = OwnerLease(layout.owner_lock(owner))
    Mover(layout, FsyncMode.NEVER).publish(layout.owner_status(owner),
                                           status.model_dump_json().encode())
    return lease


def test_only_a_live_claiming_other_processor_counts(spool_root: Path) -> None:
    layout = Layout(spool_root)
    stale = datetime.now(UTC) - timedelta(seconds=HEARTBEAT_STALE_S + 5)
    leases = [_publish(layout, "me", "mine"),
              _publish(layout, "other", "theirs"),
              _publish(layout, "leaving", "going", stopping=True),
              _publish(layout, "hung", "stuck", heartbeat_at=stale)]
    try:
        others = OtherCatalogues(layout, "me", recheck_s=0.0)
        assert others.offered_by("theirs") == "other"
        assert others.offered_by("mine") is None, "this processor's own catalogue"
        assert others.offered_by("going") is None, "a stopping processor claims nothing"
        assert others.offered_by("stuck") is None, "a hung one may never claim it"
        assert others.offered_by("nobody") is None
    finally:
        for lease in leases:
            lease.release()
    assert OtherCatalogues(layout, "me", recheck_s=0.0).offered_by("theirs") is None, \
        "its lock let go: gone"
