"""No-clobber drops that link the staged file into ``pending/`` and then unlink it.

That is how a drop is published where the filesystem has no ``RENAME_NOREPLACE`` (NFS,
CIFS, many FUSE filesystems: :meth:`spool.fsops.Mover.move` falls back to ``link`` and
``unlink``, ``spoolq submit`` included), and how maildir-style writers deliver.  For a
moment the file has two links; a processor that looked then quarantined it as a "hard
link" at once: the client had been told the job was submitted, and it failed
``invalid_job`` without running (3 of 3,000 ``Client.submit`` calls with the fallback,
three submitters beside a real processor).  A hard link now waits out the settle time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from spoolkit import start_processor, stop_processor

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState

JOB = b'{"tool": "echo", "params": {"message": "linked"}}'


def test_a_linked_drop_runs_once_its_staged_name_is_gone(env: dict[str, str],
                                                       root: Path, tmp_path: Path) -> None:
    proc = start_processor(root, env, tmp_path / "processor.log", SPOOL_SETTLE_S="3",
                           SPOOL_SCAN_S="0.5")
    try:
        staged = root / "tmp" / "staged-by-hand"
        staged.write_bytes(JOB)
        os.link(staged, root / "pending" / "linked.json")
        time.sleep(0.5)  # the processor sees the drop with its two links
        staged.unlink()
        client = Client(Layout(root), Mover(Layout(root), FsyncMode.NEVER))
        record = client.wait("linked", timeout=20)
    finally:
        stop_processor(proc)
    assert record.state is JobState.DONE, record.error
    assert record.result == {"message": "linked"}
    assert sorted(os.listdir(root / "failed")) == []
