"""``stage/``: the processor's own staging folder (``Mover(recycle=True)``).

Clients stage their drops in ``tmp/``; the processor's spares and the records it
writes fresh stay out of it, so its renames never wait on ``tmp/``'s directory
lock behind theirs.  A spool without ``stage/`` still works: the processor makes
it, or stages in ``tmp/`` as before when it cannot.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from spoolkit import FakeClock, done_record, listing, make_spool, nest_dirs, submit

from spool.feed import inotify_c, open_inotify, read_inotify
from spool.fsops import SPARE_TAG, STAGE_MODE, WRITE_TAG, Mover
from spool.layout import Layout, pid_space
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.staged import DEAD_STAGING_AGE_S
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
REPO = Path(__file__).resolve().parents[2]


class Watch:
    """Every entry made, renamed or removed in one folder, by inotify."""

    def __init__(self, folder: Path) -> None:
        assert inotify_c is not None
        self.fd = open_inotify()
        c = inotify_c.InotifyConstants
        inotify_c.inotify_add_watch(self.fd, os.fsencode(folder), c.IN_CREATE | c.IN_DELETE
                                    | c.IN_MOVED_FROM | c.IN_MOVED_TO)

    def names(self) -> list[str]:
        return [os.fsdecode(name) for _, _, name in read_inotify(self.fd)]

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def watch() -> Iterator[type[Watch]]:
    made: list[Watch] = []

    class Closing(Watch):
        def __init__(self, folder: Path) -> None:
            super().__init__(folder)
            made.append(self)

    yield Closing
    for w in made:
        w.close()


def finish(spool: Spool, job_id: str) -> None:
    claim = spool.claim(job_id)
    assert claim is not None
    spool.complete(claim, done_record(claim, job_id))


def test_the_processor_stages_in_stage_and_leaves_tmp_to_the_clients(
        tmp_path: Path, clock: FakeClock, watch: type[Watch]) -> None:
    processor = make_spool(tmp_path / "spool", clock=clock, recycle=True)
    layout = processor.layout
    client = Spool(layout, Mover(layout, FsyncMode.NEVER))
    for n in range(5):
        submit(client, f"j{n}")
    in_tmp, in_stage = watch(layout.tmp), watch(layout.stage)
    for n in range(5):
        finish(processor, f"j{n}")
    assert in_tmp.names() == [], "the processor made, renamed or removed nothing in tmp/"
    staged = in_stage.names()
    assert any(name.startswith(WRITE_TAG + "j0.") for name in staged), \
        "the first record, written fresh"
    assert any(name.startswith(SPARE_TAG + ".") for name in staged), "a spare"
    assert [n.split(".")[0] for n in listing(layout.stage)] == [SPARE_TAG]
    submit(client, "later")
    assert in_tmp.names() != [] and in_stage.names() == [], "a client stages in tmp/"
    processor.mover.drop_spares()
    assert listing(layout.stage) == [] and listing(layout.tmp) == []


def test_an_old_spool_without_stage_is_a_spool_and_its_processor_makes_the_folder(
        tmp_path: Path) -> None:
    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    layout.stage.rmdir()
    layout.require()  # initialised as it was before stage/ existed
    assert layout.exists()
    client = Mover(layout, FsyncMode.NEVER)
    assert not layout.stage.exists(), "only the processor's Mover makes it"
    mover = Mover(layout, FsyncMode.NEVER, recycle=True)
    assert mover.staging_note is None and client.staging_note is None
    st = os.lstat(layout.stage)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == STAGE_MODE


def test_no_spool_yet_gets_no_stage(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "nothing")
    layout.root.mkdir()
    mover = Mover(layout, FsyncMode.NEVER, recycle=True)
    assert listing(layout.root) == [] and mover.staging_note is None


@pytest.mark.parametrize("what", ["a file", "writable by others", "a symlink"])
def test_a_stage_it_cannot_use_leaves_the_processor_in_tmp_saying_why(
        tmp_path: Path, clock: FakeClock, what: str) -> None:
    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    layout.stage.rmdir()
    if what == "a file":
        layout.stage.write_bytes(b"")
    elif what == "writable by others":
        layout.stage.mkdir()
        layout.stage.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        layout.stage.symlink_to(tmp_path / "elsewhere")
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER, recycle=True), clock)
    note = spool.mover.staging_note
    assert note is not None and str(layout.stage) in note
    submit(spool, "x")
    finish(spool, "x")
    assert [n.split(".")[0] for n in listing(layout.tmp)] == [SPARE_TAG]
    spool.mover.drop_spares()
    assert listing(layout.tmp) == []


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"),
                    reason="drops root's DAC override with setpriv")
def test_a_stage_it_may_not_make_leaves_the_processor_in_tmp(tmp_path: Path) -> None:
    """``init --system`` made the spool before stage/ existed; its root is not the
    processor's to write (here: root without its DAC override, root folder 0555)."""
    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    layout.stage.rmdir()
    layout.root.chmod(0o555)
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from spool.fsops import Mover\n"
            "from spool.layout import Layout\n"
            "from spool.settings import FsyncMode\n"
            "m = Mover(Layout(Path(sys.argv[1])), FsyncMode.NEVER, recycle=True)\n"
            "print(m.staging_note)\n"
            "print(m._spare_base)\n")
    try:
        out = subprocess.run([*NO_DAC, sys.executable, "-c", code, str(layout.root)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    finally:
        layout.root.chmod(0o755)
    note, spare_base = out.splitlines()
    assert note == f"cannot make {layout.stage}: Permission denied"
    assert spare_base.startswith(f"{layout.tmp}/{SPARE_TAG}.")
    assert not layout.stage.exists()


def test_recovery_clears_dead_owners_leftovers_in_stage_and_keeps_live_ones(
        tmp_path: Path, clock: FakeClock) -> None:
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=True)
    stage = spool.layout.stage
    submit(spool, "mine")
    finish(spool, "mine")
    (ours,) = listing(stage)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as live:
        space = pid_space() or ""  # this pid space's: their pids tell
        leftovers = {
            f"{SPARE_TAG}.{dead_pid}.{space}0123456789ab0.tmp": False,  # a dead one's spare
            f"job.{dead_pid}.{space}0123456789ab.tmp": False,  # its record, half written
            f"{SPARE_TAG}.{live.pid}.{space}0123456789ab0.tmp": True,  # a live one's
            f"job.{live.pid}.{space}0123456789ab.tmp": True,
        }
        for name in leftovers:
            (stage / name).write_bytes(b'{"tool": "echo"}')
        report = Recovery(spool, lambda job: 3).scan()
        assert report.removed == 2
        assert listing(stage) == sorted([ours, *(n for n, kept in leftovers.items() if kept)])
        assert live.stdin is not None
        live.stdin.close()
    assert live.wait(timeout=10) == 0
    spool.mover.drop_spares()
    assert listing(spool.layout.folder(JobState.RUNNING)) == []


def test_a_live_processors_spare_is_kept_however_old(tmp_path: Path) -> None:
    """Another live processor's spare in ``stage/`` (made at its start, kept unchanged
    while the disk has room: days) is its own however long it waits.  Settled as any
    staging file a day old, it was removed under its processor, which then had no spare
    when the disk filled."""
    clock = FakeClock(datetime.now(UTC))  # the files' times are the real clock's
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=True)
    stage = spool.layout.stage
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as live:
        spare = stage / f"{SPARE_TAG}.{live.pid}.0123456789ab0.tmp"
        spare.write_bytes(b"")
        recovery = Recovery(spool, lambda job: 3)
        recovery.scan()
        assert spare.exists()
        clock.advance(DEAD_STAGING_AGE_S + 60)  # a day of the processor's own time
        recovery.scan()
        assert spare.exists(), listing(stage)
        assert live.stdin is not None
        live.stdin.close()
    assert live.wait(timeout=10) == 0
    spool.mover.drop_spares()


def test_recovery_passes_over_a_stage_it_cannot_list(tmp_path: Path, clock: FakeClock) -> None:
    spool = make_spool(tmp_path / "spool", clock=clock)
    spool.layout.stage.rmdir()
    spool.layout.stage.write_bytes(b"not a folder")
    Recovery(spool, lambda job: 3).scan()
    assert spool.layout.stage.read_bytes() == b"not a folder"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"),
                    reason="drops root's DAC override with setpriv")
def test_a_stage_that_refuses_a_spare_has_the_finished_file_removed(tmp_path: Path) -> None:
    """stage/ made read-only under a running processor, between a run's record and its
    running file's retirement: the file is removed instead of kept as a spare.  Raised,
    the record stood in done/ beside the running file while the processor paused."""
    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    running = layout.job_str(JobState.RUNNING, "x")
    Path(running).write_bytes(b'{"tool": "echo"}')
    code = ("import os, sys\n"
            "from pathlib import Path\n"
            "from spool.fsops import Mover\n"
            "from spool.layout import Layout\n"
            "from spool.settings import FsyncMode\n"
            "layout = Layout(Path(sys.argv[1]))\n"
            "mover = Mover(layout, FsyncMode.ALWAYS, recycle=True)\n"
            "assert mover.staging_note is None, mover.staging_note\n"
            "fd = os.open(sys.argv[2], os.O_RDONLY)\n"
            "layout.stage.chmod(0o555)\n"
            "print(mover.retire(sys.argv[2], fd))\n"
            "os.close(fd)\n")
    try:
        proc = subprocess.run([*NO_DAC, sys.executable, "-c", code, str(layout.root), running],
                              check=False, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        layout.stage.chmod(STAGE_MODE)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "False\n", "")
    assert not os.path.lexists(running)
    assert listing(layout.stage) == []


def test_a_clients_deep_directory_left_in_tmp_for_a_day_is_removed(tmp_path: Path) -> None:
    """A submitter may leave anything in ``tmp/``; a day unchanged, recovery removes it.  A
    directory nested past the recursion limit made that removal (shutil.rmtree) raise
    RecursionError: the processor crashed, and again at each start, a day after anyone
    in the submit group left one there."""
    clock = FakeClock(datetime.now(UTC))  # the files' times are the real clock's
    spool = make_spool(tmp_path / "spool", clock=clock)
    left = spool.layout.tmp / "upload"
    nest_dirs(left, sys.getrecursionlimit() + 500)
    try:
        recovery = Recovery(spool, lambda job: 3)
        recovery.scan()
        assert left.exists()
        clock.advance(DEAD_STAGING_AGE_S + 60)
        recovery.scan()
        assert not os.path.lexists(left), listing(spool.layout.tmp)
    finally:  # pytest's own cleanup of tmp_path is shutil.rmtree too
        subprocess.run(["rm", "-rf", "--", str(left)], check=True)
