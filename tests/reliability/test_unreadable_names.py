"""Names whose file the disk cannot read (a bad sector), and the drops that come under
them afterwards.

The processor runs under ``bad_sector_processor``: every ``os.read`` of a file whose path
holds ``BAD_SECTOR_NAME`` fails with EIO while the flag file exists.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from relkit import Daemon, drop, record, wait_for

UNREADABLE = "cannot read a pending file; trying it again at each scan"


def _said(d: Daemon, msg: str) -> list[dict[str, object]]:
    return [e for e in d.events() if e.get("msg") == msg]


def test_a_redrop_of_an_unreadable_pending_name_is_judged_on_its_event(
        spool_root: Path, tmp_path: Path) -> None:
    """A pending file whose read failed is judged again at the next scan, not at its
    events (its claim's give-back is one).  A new file dropped under that name (a quick
    re-drop, a retry: another inode, another mtime) waited for that scan too, up to
    ``SPOOL_SCAN_S`` (here 60 s); it is judged on its own event."""
    flag = tmp_path / "sector-bad"
    flag.touch()
    d = Daemon(spool_root, tmp_path / "p.log", module="bad_sector_processor",
               BAD_SECTOR_NAME="pending/bad.", BAD_SECTOR_FLAG=str(flag), SPOOL_SCAN_S="60")
    try:
        d.start()
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 0}})
        wait_for(lambda: _said(d, UNREADABLE), 20, "the bad file's failed read")
        flag.unlink()  # the new file lies elsewhere on the disk: it reads
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 1}})
        rec = wait_for(lambda: record(spool_root, "bad"), 20,
                       "the re-drop's record (before the 60 s scan)")
        assert (rec["state"], rec["params"]) == ("done", {"message": 1}), rec
        assert len(_said(d, UNREADABLE)) == 1, d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        d.abort()


WAITS = ("a drop waits behind its id's orphan, which recovery cannot read; claimed once "
         "that orphan is settled")
LEFT = "recovery cannot read a file; left there, tried at each pass"
SCAN_S = 0.3
"""The scan interval of the test that waits for passes that could repeat a line."""


def test_a_drop_behind_an_orphan_the_disk_cannot_read_is_said_once(
        spool_root: Path, tmp_path: Path) -> None:
    """An orphan in ``running/`` whose read fails is left there; a drop of its id is never
    claimed while it stays (a claim never overwrites).  It waited with no line but the
    orphan's own warning (said once, before the drop came); a warning says so once, not
    once a pass, and ``spoolq show`` says what it waits behind."""
    flag = tmp_path / "sector-bad"
    flag.touch()
    (spool_root / "running" / "bad.json").write_text('{"tool": "echo", "params": {}}')
    d = Daemon(spool_root, tmp_path / "p.log", module="bad_sector_processor",
               BAD_SECTOR_NAME="running/bad.", BAD_SECTOR_FLAG=str(flag),
               SPOOL_SCAN_S=str(SCAN_S))
    try:
        d.start()
        wait_for(lambda: _said(d, LEFT), 20, "the orphan's failed read")
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 1}})
        said = wait_for(lambda: _said(d, WAITS), 20, "the line of the drop that waits")
        assert said[0]["id"] == "bad", said
        time.sleep(4 * SCAN_S)  # more passes: said once, not once a pass
        assert len(_said(d, WAITS)) == 1, d.logs()[-3000:]
        assert len(_said(d, LEFT)) == 1, d.logs()[-3000:]
        assert (spool_root / "pending" / "bad.json").exists()
        shown = subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir",
                                str(spool_root), "show", "bad"], capture_output=True,
                               text=True, timeout=60, check=False)
        assert shown.returncode == 0, shown.stderr
        assert "pending" in shown.stdout and "running/bad.json" in shown.stderr, shown
        flag.unlink()  # readable again: the orphan settled, then the drop claimed
        rec = wait_for(lambda: (r := record(spool_root, "bad")) and r["params"] == {
            "message": 1} and r, 30, "the drop's record")
        assert rec["state"] == "done", rec
        assert d.stop() == 0
    finally:
        d.abort()
