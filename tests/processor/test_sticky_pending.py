"""A ``pending/`` whose sticky bit keeps the processor from other users' drops is said.

A drop folder with the sticky bit that is not the spool user's (a root-owned 1777, the
classic "anyone may drop") lets the processor move only its own user's drops: a smoke
test as the spool user passes, and every other user's drop waited in ``pending/`` for
good, said once as an immutable file (QA).  The start says what is wrong and how to
mend it, and so does the line for each such drop.  Root has CAP_FOWNER, which the
sticky bit does not stop: the processor runs here as root without it (setpriv), as a
unit whose bounding set drops it would.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, wait_for, wait_record

NO_FOWNER = ["setpriv", "--bounding-set", "-fowner", "--inh-caps", "-fowner", "--"]
SAID = "has the sticky bit and belongs to uid 65534, not this user (uid 0)"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="drops root's CAP_FOWNER with setpriv")
def test_a_sticky_pending_of_another_owner_is_said_at_start_and_per_drop(
        spool_root: Path, tmp_path: Path) -> None:
    pending = spool_root / "pending"
    os.chown(pending, 65534, -1)  # nobody's
    pending.chmod(0o1777)
    theirs = pending / "theirs.json"
    theirs.write_bytes(orjson.dumps({"tool": "echo"}))
    os.chown(theirs, 12345, -1)  # another user's drop
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=NO_FOWNER, JOB_NUM="1")
    try:
        d.start()
        drop(spool_root, "mine", {"tool": "echo"})  # the spool user's own: it runs
        assert wait_record(spool_root, "mine")["state"] == "done"
        wait_for(lambda: "cannot move the file of theirs" in d.logs(), 20, "theirs said")
        assert d.stop() == 0
    finally:
        d.abort()
        pending.chmod(0o755)
        os.chown(pending, 0, -1)
    start = [e for e in d.events()
             if str(e.get("msg", "")).startswith("pending/ keeps other users' drops")]
    assert len(start) == 1 and SAID in start[0]["msg"], d.logs()
    said = [line for line in d.logs().splitlines() if "cannot move the file of theirs" in line]
    assert said and SAID in said[0] and "immutable" not in said[0], said
    assert theirs.exists()  # left where it is: nothing else can be done with it
