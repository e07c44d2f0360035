"""A real processor stages in ``stage/``, never in the clients' ``tmp/``; without a
``stage/`` it may make, it stages in ``tmp/`` and says so once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, wait_for

from spool.feed import inotify_c, open_inotify, read_inotify

StartDaemon = Callable[..., Daemon]
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
JOBS = 60
WARNING = "staging in tmp/, beside the clients' drops: no stage/ of its own"


def _drop_in_place(root: Path, count: int) -> None:
    """Drops that never touch tmp/: written in pending/ under a name intake ignores."""
    for n in range(count):
        part = root / "pending" / f"j{n}.json.part"
        part.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": f"m{n}"}}))
        os.rename(part, root / "pending" / f"j{n}.json")


def _watch(folder: Path) -> int:
    """An inotify descriptor told of every entry made, renamed or removed in ``folder``."""
    assert inotify_c is not None
    c = inotify_c.InotifyConstants
    fd = open_inotify()
    inotify_c.inotify_add_watch(fd, os.fsencode(folder), c.IN_CREATE | c.IN_DELETE
                                | c.IN_MOVED_FROM | c.IN_MOVED_TO)
    return fd


def _seen(fd: int) -> list[str]:
    return [os.fsdecode(name) for _, _, name in read_inotify(fd)]


def _all_done(root: Path, count: int) -> bool:
    return sum(name.endswith(".json") for name in os.listdir(root / "done")) == count


def test_the_processor_makes_renames_and_removes_nothing_in_tmp(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon(JOB_NUM="2")
    fd = _watch(spool_root / "tmp")
    try:
        _drop_in_place(spool_root, JOBS)
        wait_for(lambda: _all_done(spool_root, JOBS), 60, "every record")
        seen = _seen(fd)
    finally:
        os.close(fd)
    assert seen == [], f"the processor staged in tmp/: {seen[:5]}"
    assert d.stop() == 0
    assert os.listdir(spool_root / "stage") == [], "a clean stop leaves no spare"
    assert not any(e.get("msg") == WARNING for e in d.events())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="drops root's DAC override with setpriv")
def test_a_spool_without_a_stage_it_may_make_runs_staging_in_tmp(
        spool_root: Path, tmp_path: Path) -> None:
    """A spool from before stage/ whose root the processor may not write (root without
    its DAC override, the root folder 0555): it starts, says why once, and runs."""
    (spool_root / "stage").rmdir()
    spool_root.chmod(0o555)
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=NO_DAC, JOB_NUM="1")
    fd = _watch(spool_root / "tmp")
    try:
        d.start()
        _drop_in_place(spool_root, 5)
        wait_for(lambda: _all_done(spool_root, 5), 60, "every record")
        assert d.stop() == 0
        seen = _seen(fd)
    finally:
        os.close(fd)
        d.abort()
        spool_root.chmod(0o755)
    assert any(name.startswith("+spare.") for name in seen), seen
    warnings = [e for e in d.events() if e.get("msg") == WARNING]
    assert len(warnings) == 1, d.logs()
    assert warnings[0]["reason"] == f"cannot make {spool_root / 'stage'}: Permission denied"
    assert not (spool_root / "stage").exists()
    assert os.listdir(spool_root / "tmp") == [], "its spares, gone at a clean stop"


def test_a_stage_removed_under_a_running_processor_is_made_again(
        spool_root: Path, daemon: StartDaemon) -> None:
    """An operator removing stage/ (the processor's alone) under a running processor
    stopped it at its next record or status write: FileNotFoundError out of the loop,
    its runs left for the next start's recovery.  It makes stage/ again and goes on."""
    d = daemon(JOB_NUM="2")
    _drop_in_place(spool_root, 10)
    wait_for(lambda: _all_done(spool_root, 10), 60, "the first records")
    shutil.rmtree(spool_root / "stage")
    for n in range(10, 30):
        (spool_root / "pending" / f"j{n}.json").write_bytes(
            orjson.dumps({"tool": "echo", "params": {"message": f"m{n}"}}))
    wait_for(lambda: _all_done(spool_root, 30), 60, "the records after stage/ went")
    assert d.proc is not None and d.proc.poll() is None, d.logs()
    # A run's running file goes just after its record is published: the last one may
    # still be there when the last record is seen.
    wait_for(lambda: os.listdir(spool_root / "running") == [], 10, "running/ to empty")
    assert (spool_root / "stage").is_dir()
    assert d.stop() == 0
    assert os.listdir(spool_root / "stage") == [], "a clean stop leaves no spare"
