"""The Mover's promises under each SPOOL_FSYNC mode: publish leaves no staging
file, no-replace moves refuse, unlink removes what it names and never follows."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from spoolkit import NOBODY, listing, make_spool, nest_dirs

from spool import fsops
from spool.errors import SpoolIOError, passing
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(params=list(FsyncMode), ids=lambda m: m.value)
def any_spool(tmp_path: Path, request: pytest.FixtureRequest) -> Spool:
    return make_spool(tmp_path / "spool", request.param)


def test_publish_and_no_replace(any_spool: Spool) -> None:
    mover, layout = any_spool.mover, any_spool.layout
    dest = layout.job(JobState.DONE, "a")
    assert mover.publish(dest, b"one") is True
    assert mover.publish(dest, b"two", replace=False) is False
    assert dest.read_bytes() == b"one"
    assert mover.publish(dest, b"three") is True
    assert dest.read_bytes() == b"three"
    mover.flush()
    assert listing(layout.tmp) == []


def test_move_no_replace_and_missing_source(any_spool: Spool) -> None:
    mover, layout = any_spool.mover, any_spool.layout
    src, dst = layout.job(JobState.PENDING, "m"), layout.job(JobState.RUNNING, "m")
    src.write_bytes(b"src")
    dst.write_bytes(b"dst")
    assert mover.move(src, dst, replace=False) is False
    assert (src.read_bytes(), dst.read_bytes()) == (b"src", b"dst")
    assert mover.move(src, dst, replace=True) is True
    assert dst.read_bytes() == b"src" and not src.exists()
    assert mover.move(src, dst) is False, "a vanished source is a lost race, not an error"


def test_link_fallback_never_overwrites(any_spool: Spool) -> None:
    """The link+unlink path used where renameat2(NOREPLACE) is missing."""
    mover, layout = any_spool.mover, any_spool.layout
    mover._noreplace_native = False
    src, dst = layout.job(JobState.PENDING, "f"), layout.job(JobState.RUNNING, "f")
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    assert mover.move(src, dst) is False and dst.read_bytes() == b"old"
    dst.unlink()
    assert mover.move(src, dst) is True and dst.read_bytes() == b"new"
    assert not src.exists()


def test_a_leased_move_by_link_keeps_the_lease_where_links_share_locks(
        any_spool: Spool) -> None:
    """On a local filesystem a hard link is the one file, its lock the one lock: the
    descriptor the claim holds leases the new name, and no second one is kept (bindfs,
    whose new names lock apart, is tests/processor/test_spool_fuse.py's)."""
    mover, layout = any_spool.mover, any_spool.layout
    mover._noreplace_native = False
    for job_id in ("l1", "l2"):
        src, dst = layout.job(JobState.PENDING, job_id), layout.job(JobState.RUNNING, job_id)
        src.write_bytes(b"job")
        fd = os.open(src, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert mover.move_leased(src, dst, fd) == fd
            assert not src.exists() and dst.read_bytes() == b"job"
            other = os.open(dst, os.O_RDONLY)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(other)
        finally:
            os.close(fd)
    taken = layout.job(JobState.PENDING, "l1")
    taken.write_bytes(b"again")
    fd = os.open(taken, os.O_RDONLY)
    try:
        assert mover.move_leased(taken, layout.job(JobState.RUNNING, "l1"), fd) is None
        assert taken.read_bytes() == b"again"
    finally:
        os.close(fd)


def test_a_filesystem_with_neither_noreplace_nor_links_is_said_at_the_start(
        any_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3fs, rclone or CIFS without UNIX extensions: no claim can be made there, and the
    processor started, said it was up, and left every job pending with a line blaming
    its file (h308, a FUSE passthrough whose link() fails).  The probe leaves nothing."""
    mover, layout = any_spool.mover, any_spool.layout

    def probes() -> list[str]:
        return [name for folder in (layout.tmp, layout.stage) if folder.is_dir()
                for name in os.listdir(folder) if "probe" in name]

    mover.require_claimable()  # this filesystem has both
    assert probes() == []
    mover._noreplace_native = False  # as on such a filesystem: renameat2 EINVAL,

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(fsops.os, "link", no_links)  # and link() refused
    with pytest.raises(SpoolIOError, match=r"neither renameat2\(RENAME_NOREPLACE\) nor hard "
                       r"links \(Operation not permitted\)"):
        mover.require_claimable()
    assert probes() == []

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsops.os, "link", full)  # a full disk is no filesystem's lack
    with pytest.raises(SpoolIOError) as refused:
        mover.require_claimable()
    assert "neither" not in str(refused.value) and passing(refused.value), refused.value
    assert probes() == []

    def odd(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMLINK, os.strerror(errno.EMLINK))

    monkeypatch.setattr(fsops.os, "link", odd)  # an errno nobody expects: raised raw, it
    with pytest.raises(SpoolIOError, match="cannot link a file to claim by: Too many "
                       "links"):  # was the processor's traceback, exit 1
        mover.require_claimable()
    assert probes() == []


def test_unlink_file_tree_symlink_and_missing(any_spool: Spool, tmp_path: Path) -> None:
    mover, failed = any_spool.mover, any_spool.layout.folder(JobState.FAILED)
    plain = failed / "plain.orig"
    plain.write_bytes(b"x")
    tree = failed / "tree.orig"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    link = failed / "link.orig"
    os.symlink(outside, link)
    for path in (plain, tree, link):
        assert mover.unlink(path) is True
        assert not os.path.lexists(path)
    assert (outside / "keep").read_bytes() == b"keep", "unlink never follows a symlink"
    assert mover.unlink(plain) is False
    assert mover.unlink_durable(plain) is False


def test_unlink_removes_a_tree_deeper_than_the_recursion_limit(any_spool: Spool,
                                                               tmp_path: Path) -> None:
    """A quarantined directory nested past the interpreter's recursion limit is removed
    like any other.  shutil.rmtree recursed once per level and raised RecursionError,
    which crashed the processor when a later run of the id superseded it, and again at
    each start (recovery removes it too)."""
    mover, failed = any_spool.mover, any_spool.layout.folder(JobState.FAILED)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    tree = failed / "deep.orig"
    nest_dirs(tree, sys.getrecursionlimit() + 500, files_every=500)
    os.symlink(outside, tree / "d" / "link")
    os.symlink(outside / "keep", tree / "d" / "d" / "flink")
    try:
        assert mover.unlink(tree) is True
        assert not os.path.lexists(tree)
    finally:  # pytest's own cleanup of tmp_path is shutil.rmtree too
        subprocess.run(["rm", "-rf", "--", str(tree)], check=True)
    assert sorted(os.listdir(failed)) == []
    assert (outside / "keep").read_bytes() == b"keep", "unlink never follows a symlink"


@pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None or shutil.which("setpriv") is None,
                    reason="needs root (to make another user's directory) and setpriv")
def test_unlink_removes_a_tree_holding_another_users_empty_directory(
        any_spool: Spool) -> None:
    """As the spool user (root without CAP_DAC_OVERRIDE), a tree whose subdirectory holds
    another user's empty directory (mode 0755): rmtree removed it, as an empty directory
    goes with its parent's write access alone; moved up instead (a directory changes
    parent only if its mover may write it), it was refused, EACCES, and the tree kept."""
    assert NOBODY is not None
    tree = any_spool.layout.folder(JobState.FAILED) / "nested.orig"
    (tree / "a" / "theirs").mkdir(parents=True)
    (tree / "a" / "file").write_bytes(b"x")
    os.chown(tree / "a" / "theirs", *NOBODY)
    os.chmod(tree / "a" / "theirs", 0o755)
    removal = subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--",
         sys.executable, "-c",
         "import sys\n"
         "from pathlib import Path\n"
         "from spool.fsops import Mover\n"
         "from spool.layout import Layout\n"
         "from spool.settings import FsyncMode\n"
         "print(Mover(Layout(Path(sys.argv[1])), FsyncMode.NEVER).unlink(Path(sys.argv[2])))",
         str(any_spool.layout.root), str(tree)],
        capture_output=True, text=True, check=False, timeout=60)
    assert (removal.returncode, removal.stdout) == (0, "True\n"), removal.stderr[-2000:]
    assert not os.path.lexists(tree)


def test_a_full_disk_is_named_in_one_clean_line(tmp_path: Path) -> None:
    """A write refused for lack of space has no file name: the error said
    ``cannot publish full.json: No space left on device ()``, the empty parentheses in
    every line a script or an operator saw (docs/operations.md quotes it without)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        spool = make_spool(mnt / "spool")
        with pytest.raises(OSError), open(mnt / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        with pytest.raises(SpoolIOError) as caught:
            spool.mover.publish(spool.layout.job(JobState.DONE, "full"), b"x" * 65536)
        assert str(caught.value) == "cannot publish full.json: No space left on device"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give folders other groups")
def test_a_published_file_takes_its_folders_group_not_the_staging_folders(
        tmp_path: Path) -> None:
    """Under ``spoolq init --system``, ``tmp/`` is setgid ``spoolq-submit`` (so drops stay
    readable by the spool user) and ``done/`` is group ``spoolq``: a record written fresh
    in ``tmp/`` kept group ``spoolq-submit`` in ``done/``, so members of ``spoolq``, who
    the docs say read every record, got "Permission denied".  A published file now takes
    the group of the folder it is published into, when its writer may give it."""
    spool = make_spool(tmp_path / "spool")
    submit_gid, spool_gid = 65534, 1  # stand-ins for spoolq-submit and spoolq
    tmp = spool.layout.tmp
    os.chown(tmp, -1, submit_gid)
    os.chmod(tmp, 0o3730)
    done = spool.layout.folder(JobState.DONE)
    os.chown(done, -1, spool_gid)
    pending = spool.layout.folder(JobState.PENDING)
    os.chown(pending, -1, submit_gid)
    mover = Mover(spool.layout, FsyncMode.NEVER)  # a fresh one: it learns the folders' groups
    assert mover.publish(done / "rec.json", b"{}")
    assert mover.publish(pending / "job.json", b"{}")
    assert os.stat(done / "rec.json").st_gid == spool_gid
    assert os.stat(pending / "job.json").st_gid == submit_gid
    assert stat.S_IMODE(os.stat(done / "rec.json").st_mode) == 0o640


def test_a_staging_file_whose_removal_was_refused_is_swept_by_the_next_pass(
        any_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder made unwritable between a staging file's write and its move (an
    operator's chmod of stage/ mid-run) refuses both the move and the removal of what
    was written: the file stayed for as long as the processor ran, since recovery
    removes only dead processes' staging files (the reliability suite's stage/ case
    failed once on it: 'tmp/ and stage/ to be clean').  The next recovery pass, or the
    stop, removes it now.  Root ignores modes, so both refusals are injected."""
    from spool.recovery import Recovery  # noqa: PLC0415 - only this test needs it

    mover, layout = any_spool.mover, any_spool.layout

    def refused(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patched:
        patched.setattr(os, "rename", refused)
        patched.setattr(os, "unlink", refused)
        with pytest.raises((SpoolIOError, OSError)):
            mover.publish(layout.job(JobState.DONE, "a"), b"{}")
    assert listing(layout.tmp) != [], "the refused write left its staging file"
    Recovery(any_spool).scan()
    assert listing(layout.tmp) == []
    assert listing(layout.folder(JobState.DONE)) == []


def test_a_publish_into_a_spool_gone_whole_is_the_spools_trouble(tmp_path: Path) -> None:
    """Its staging folder gone, a publish chose staging again and wrote there: with the
    whole spool gone (a lazy unmount), that second write's FileNotFoundError got out raw
    and crashed the processor (the review; a traceback, exit 1, five runs abandoned)."""
    layout = Layout(tmp_path / "spool")
    mover = Mover(layout, FsyncMode.NEVER, recycle=True)
    mover.make_folders()
    shutil.rmtree(layout.root)
    with pytest.raises(SpoolIOError, match="is gone"):
        mover.publish(layout.job(JobState.DONE, "j1"), b"{}")
