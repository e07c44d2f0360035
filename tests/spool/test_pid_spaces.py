"""Staging files of processes in other pid namespaces (containers sharing a spool).

A staging file's name carries its writer's pid, for recovery to settle the files of
writers that died.  A pid of another pid namespace says nothing here: the submits,
cancel requests and records that other containers' processes were writing were taken
for dead writers' and removed mid-write, and the submit then said "job X is already
pending" of a job that was nowhere (QA, one submit in 150 to 600).  The name now says
the writer's pid space too (``spool.layout.pid_space``), and publish writes its staged
file again when it was removed before its rename.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from spoolkit import REPO, FakeClock, listing, make_spool

from spool import fsops
from spool.errors import SpoolIOError
from spool.fsops import SPARE_TAG, WRITE_TAG
from spool.layout import Layout, parse_staging, pid_space
from spool.recovery import Recovery
from spool.staged import DEAD_STAGING_AGE_S, STAGING_GRACE_S
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

WRITER = """
import sys
from pathlib import Path
from spool.layout import Layout
layout = Layout(Path(sys.argv[1]))
path = Path(layout.staging_str(sys.argv[2]))
path.write_bytes(b'{"tool": "echo"}')
print(path.name, flush=True)
sys.stdin.read()
"""


def clock_at_change(clock: FakeClock, path: Path) -> None:
    """Step ``clock``'s wall time to when ``path`` last changed (its ctime, which the
    file's age is counted from): the clock was read before the write, and on a loaded
    host the python started between them (a second and more) was taken off the grace
    the test then advanced by, the file still within it (CI-like load, h361)."""
    clock.step(path.stat().st_ctime - clock.now().timestamp())


@pytest.fixture
def other_namespace_writer(tmp_path: Path) -> Iterator[tuple[Spool, FakeClock, str]]:
    """A spool, and a staged write in its tmp/ by a live process of another pid namespace
    whose pid (99991 there) no process here has."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a pid namespace")
    clock = FakeClock(datetime.now(UTC))
    spool = make_spool(tmp_path / "spool", clock=clock)
    # sh forks its python, which gets the pid after the last one set
    script = f'echo 99990 > /proc/sys/kernel/ns_last_pid && {sys.executable} -c "$0" "$@"'
    with subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                           script, WRITER, str(spool.layout.root),
                           WRITE_TAG + "job-1"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}) as writer:
        try:
            assert writer.stdout is not None
            name = writer.stdout.readline().strip()
            if not name:
                pytest.skip("no pid namespace could be made here")
            clock_at_change(clock, spool.layout.tmp / name)
            yield spool, clock, name
        finally:
            assert writer.stdin is not None
            writer.stdin.close()
            writer.wait(timeout=10)


def test_a_live_writer_of_another_pid_namespace_keeps_its_staged_file(
        other_namespace_writer: tuple[Spool, FakeClock, str]) -> None:
    spool, clock, name = other_namespace_writer
    staged = parse_staging(name)
    assert staged is not None and staged.pid == 99991 and staged.space is not None
    assert staged.space != pid_space()
    Recovery(spool).scan()
    assert listing(spool.layout.tmp) == [name], "removed under its live writer"
    # Nothing here can tell whether that writer lives: a file it left stays a grace.
    clock.advance(STAGING_GRACE_S + 1)
    Recovery(spool).scan()
    assert listing(spool.layout.tmp) == []


def test_a_dead_writer_of_this_pid_space_is_settled_at_once(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    mine = Path(spool.layout.staging_str(WRITE_TAG + "job-1")).name
    dead = mine.replace(f".{os.getpid()}.", f".{int(gone.stdout)}.")
    (spool.layout.tmp / dead).write_bytes(b"half")
    Recovery(spool).scan()
    assert listing(spool.layout.tmp) == []


def test_an_older_spoolqs_write_whose_pid_runs_nowhere_here_is_kept_a_grace(
        tmp_path: Path) -> None:
    """A name without a pid space (an older spoolq's) may be of another pid namespace's
    writer: judged by its pid alone, an older client's submit in another container was
    removed before its rename, and it said "already pending" of a job that was nowhere
    (h309, mid-upgrade: 11 of 1,500 submits)."""
    clock = FakeClock(datetime.now(UTC))
    spool = make_spool(tmp_path / "spool", clock=clock)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    older = spool.layout.tmp / f"{WRITE_TAG}job-1.{int(gone.stdout)}.{'ab' * 6}.tmp"
    older.write_bytes(b'{"tool": "ec')
    clock_at_change(clock, older)
    assert parse_staging(older.name) == (WRITE_TAG + "job-1", int(gone.stdout), None)
    Recovery(spool).scan()
    assert older.exists(), "removed under a writer that may live in another namespace"
    clock.advance(STAGING_GRACE_S + 1)
    Recovery(spool).scan()
    assert not older.exists()


def test_another_pid_space_s_spare_is_kept_a_day(tmp_path: Path) -> None:
    """A spare waits, unchanged, for a full disk (Mover.retire): one of another
    container's processor is kept a day, not the grace a write is."""
    clock = FakeClock(datetime.now(UTC))
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=True)
    other = "0" * 8 if pid_space() != "0" * 8 else "1" * 8
    spare = spool.layout.stage / f"{SPARE_TAG}.1.{other}0123456789ab0.tmp"
    spare.write_bytes(b"")
    Recovery(spool).scan()
    clock.advance(STAGING_GRACE_S * 10)
    Recovery(spool).scan()
    assert spare.exists()
    clock.advance(DEAD_STAGING_AGE_S)
    Recovery(spool).scan()
    assert not spare.exists()


def test_older_names_and_foreign_ones_are_read_as_before() -> None:
    assert parse_staging(f"=job.123.{'ab' * 6}.tmp") == ("=job", 123, None)
    assert parse_staging(f"+spare.123.{'ab' * 6}1f2.tmp") == ("+spare", 123, None)
    assert parse_staging(f"=job.123.0a1b2c3d{'ab' * 6}.tmp") == ("=job", 123, "0a1b2c3d")
    assert parse_staging(f"+spare.1.0a1b2c3d{'ab' * 6}7.tmp") == ("+spare", 1, "0a1b2c3d")
    # c6b73eb's, on main for 27 minutes: the space beside the pid (h309).
    assert parse_staging(f"cancel-j1.123-0a1b2c3d.{'ab' * 6}.tmp") == ("cancel-j1", 123,
                                                                     "0a1b2c3d")
    for client in (f"=job.12x.{'ab' * 6}.tmp", f"=job.123.{'ab' * 5}.tmp",
                   "export.20261201.part.tmp", f"=job..{'ab' * 6}.tmp",
                   f"=job.123-0a1b.{'ab' * 6}.tmp", f"=job.x-0a1b2c3d.{'ab' * 6}.tmp",
                   f"=job.123-0a1b2c3g.{'ab' * 6}.tmp"):
        assert parse_staging(client) is None, client
    name = Path(Layout(Path("/s")).staging_str("=job")).name
    assert parse_staging(name) == ("=job", os.getpid(), pid_space())
    # An older spoolq reads it as its own (tag, pid): a move cut short is never taken for
    # a client's file by a processor a downgrade put back (the review).
    parts = name.rsplit(".", 3)
    assert parts[1].isdigit() and len(parts[2]) >= 12 and parts[3] == "tmp"


def test_publish_writes_again_when_its_staged_file_is_removed_before_its_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taken for "the name is taken", a submit said the job was already pending."""
    spool = make_spool(tmp_path / "spool")
    dest = spool.layout.job_str(JobState.PENDING, "j1")
    real_move = spool.mover.move
    removals = [2]

    def removed_first(src: fsops.StrPath, dst: fsops.StrPath, **kw: object) -> bool:
        if removals[0]:
            removals[0] -= 1
            os.unlink(src)  # another process's recovery, just before the rename
        return real_move(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(spool.mover, "move", removed_first)
    assert spool.mover.publish(dest, b'{"tool": "echo"}', replace=False)
    assert Path(dest).read_bytes() == b'{"tool": "echo"}' and listing(spool.layout.tmp) == []
    # The name taken: False, as ever.
    assert not spool.mover.publish(dest, b"{}", replace=False)
    # Removed every time: a clear error, not "taken".
    removals[0] = fsops.STAGED_WRITE_TRIES
    with pytest.raises(SpoolIOError, match="removed before it could be moved in"):
        spool.mover.publish(spool.layout.job_str(JobState.PENDING, "j2"), b"{}",
                            replace=False)
    assert listing(spool.layout.folder(JobState.PENDING)) == ["j1.json"]

