"""A spool swapped under a running processor between the loop's check of it and its
periodic recovery pass (tests/processor/swapping_processor.py makes the swap there, each
time; a remount under load fell into that window now and then in
tests/processor/test_spool_fuse.py).  The swapped-in spool's files are unlocked: the
pass took the processor's own running job for an orphan and requeued it, a second run
of it due beside the first.  The pass asks, once it has locked a file and before it
changes it, whether the spool is still the processor's; it is not, so the processor
stops, exit 75, and leaves its run to the next start's recovery."""

from __future__ import annotations

from pathlib import Path

from daemonkit import Daemon, drop, wait_for


def test_a_spool_swapped_before_a_recovery_pass_requeues_nothing(
        spool_root: Path, tmp_path: Path) -> None:
    trigger = tmp_path / "swap-now"
    d = Daemon(spool_root, tmp_path / "daemon.log", module="swapping_processor",
               JOB_NUM="1", SPOOL_SCAN_S="0.3", SWAP_SPOOL_WHEN=str(trigger))
    try:
        d.start()
        drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 30},
                                  "max_attempts": 3})
        wait_for(lambda: (spool_root / "running" / "long.json").exists()
                 and not (spool_root / "pending" / "long.json").exists(), 30, "the run")
        trigger.touch()
        assert d.proc is not None
        assert d.proc.wait(timeout=30) == 75, d.logs()
        assert "spool swapped" in d.logs()
        assert "is no longer the directory this processor holds its locks in" in d.logs()
        assert not [e for e in d.events() if e.get("event") in ("requeued", "failed")
                    or e.get("reason") == "orphaned"], d.logs()
        # Left as it was in the spool now at the path, for the next start's recovery.
        assert (spool_root / "running" / "long.json").exists()
        assert not (spool_root / "pending" / "long.json").exists()
        # Stopped under its first lock, the dead owner's (its own owner file's copy),
        # before it removed anything: no recovery line.
        assert "recovery stopped at owners/" in d.logs(), d.logs()
        assert not [e for e in d.events() if e.get("msg") == "recovery"], d.logs()
    finally:
        d.abort()
