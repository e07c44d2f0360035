"""Root's commands on another user's spool reach its folders through descriptors
(spool.view): a symlink its owner puts where a folder was is refused, and one put there
after the command took its view is never followed.

The service user owns the spool's root: root's purge removed the files of the folder
its link named, cancel wrote a record over a root file, retry moved one into
``pending/`` (h322).  Real CLI as a subprocess, real uids; root only."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from spoolkit import has_passwd_entry

from spool import view as view_module
from spool.client import Client
from spool.durability import FsyncMode
from spool.errors import SpoolIOError
from spool.fsops import Mover
from spool.layout import FOLDER_NAMES, Layout
from spool.models import Job
from spool.states import JobState
from spool.view import guarded, shown

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root only")
NOBODY = 65534


@pytest.fixture(autouse=True)
def _views_released() -> Iterator[None]:
    """Each test's views removed at its end (see view.release_all)."""
    yield
    view_module.release_all()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may pass through (pytest's own are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="spoolq-owner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _spoolq(*args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPOOL_FSYNC": "never"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([sys.executable, "-m", "spool.cli.main", *args], text=True,
                          capture_output=True, timeout=60, check=False, env=env)


def _nobodys_spool(open_dir: Path) -> tuple[Path, Path]:
    """A spool of uid 65534's, and a folder of root's alone beside it."""
    root = open_dir / "spool"
    assert _spoolq("init", "--spool-dir", str(root)).returncode == 0
    for path in [root, *root.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    secret = open_dir / "secret"
    secret.mkdir(mode=0o700)
    return root, secret


def _link(root: Path, folder: str, target: Path) -> None:
    """What the spool's owner may do: its folder replaced by a symlink."""
    shutil.rmtree(root / folder)
    (root / folder).symlink_to(target)
    os.lchown(root / folder, NOBODY, NOBODY)


def _refused(done: subprocess.CompletedProcess[str], root: Path, folder: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [
        f"spoolq: error: {root}/{folder} is a symlink: the spool's owner may have put it "
        "there, and root will not work through it; move it aside and run spoolq init "
        "--system (which makes the folder again), or run spoolq as the spool's owner"
    ], done.stderr


def test_roots_purge_refuses_the_owners_symlink(open_dir: Path) -> None:
    root, secret = _nobodys_spool(open_dir)
    victim = secret / "victim.json"
    victim.write_text('{"not": "a record"}')
    os.utime(victim, (0, 0))
    _link(root, "failed", secret)
    done = _spoolq("purge", "--spool-dir", str(root), "--older-than", "1s",
                   "--state", "failed")
    assert victim.exists()
    _refused(done, root, "failed")


def test_roots_submit_does_not_stage_through_the_owners_symlink(open_dir: Path) -> None:
    root, secret = _nobodys_spool(open_dir)
    _link(root, "tmp", secret)
    done = _spoolq("submit", "--spool-dir", str(root), "echo", "-p", "message=x")
    assert list(secret.iterdir()) == []
    _refused(done, root, "tmp")


def test_roots_cancel_does_not_write_its_record_through_the_owners_symlink(
        open_dir: Path) -> None:
    root, secret = _nobodys_spool(open_dir)
    submitted = _spoolq("submit", "--spool-dir", str(root), "echo", "-p", "message=x")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    victim = secret / f"{job_id}.json"
    victim.write_text("root's own")
    _link(root, "failed", secret)
    done = _spoolq("cancel", "--spool-dir", str(root), job_id)
    assert victim.read_text() == "root's own"
    _refused(done, root, "failed")
    assert (root / "pending" / f"{job_id}.json").exists()  # nothing moved


def test_roots_commands_leave_no_view_behind(open_dir: Path, tmp_path: Path) -> None:
    root, _ = _nobodys_spool(open_dir)
    submitted = _spoolq("submit", "--spool-dir", str(root), "echo", "-p", "message=x",
                        tmpdir=tmp_path)
    listed = _spoolq("ls", "--spool-dir", str(root), "--json", tmpdir=tmp_path)
    assert submitted.returncode == 0 and listed.returncode == 0, (submitted.stderr,
                                                                  listed.stderr)
    assert submitted.stdout.strip() in listed.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_folder_swapped_after_the_view_was_taken_is_not_followed(open_dir: Path) -> None:
    """The race a check before each use would lose: the view holds the folder opened,
    so the cancel's record lands in the folder moved aside, not in the link's target."""
    root, secret = _nobodys_spool(open_dir)
    layout = guarded(Layout(root))
    assert layout.view is not None
    client = Client(layout, Mover(layout, FsyncMode.NEVER))
    job_id = client.submit(Job(tool="echo", params={"message": "x"}))
    (root / "failed").rename(root / "failed.moved")
    (root / "failed").symlink_to(secret)
    assert client.cancel(job_id).state is JobState.FAILED
    assert list(secret.iterdir()) == []
    assert (root / "failed.moved" / f"{job_id}.json").exists()


def test_roots_cancel_and_retry_on_a_system_spool_stage_through_the_view(
        open_dir: Path) -> None:
    """A system spool's tmp/ is the submitters' (3730), so a cancel or retry must stage
    in stage/; through root's view stage/ is a link to its pinned folder, and root's
    cancel was refused "stage is not a directory" (h386)."""
    root, _ = _nobodys_spool(open_dir)
    (root / "tmp").chmod(0o3730)
    (root / "pending").chmod(0o3730)
    submitted = _spoolq("submit", "--spool-dir", str(root), "echo", "-p", "message=x",
                        "--not-before", "2099-01-01T00:00:00Z")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    cancelled = _spoolq("cancel", "--spool-dir", str(root), job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert (root / "failed" / f"{job_id}.json").exists()
    retried = _spoolq("retry", "--spool-dir", str(root), job_id)
    assert retried.returncode == 0, retried.stderr
    assert (root / "pending" / f"{job_id}.json").exists()


def test_no_view_for_a_spool_root_owns(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    assert _spoolq("init", "--spool-dir", str(root)).returncode == 0
    assert guarded(Layout(root)).view is None


def test_roots_plain_init_of_a_whole_spool_says_a_folder_is_a_symlink(open_dir: Path) -> None:
    """It said "spool ready" (h325)."""
    root, secret = _nobodys_spool(open_dir)
    _link(root, "done", secret)
    _refused(_spoolq("init", "--spool-dir", str(root)), root, "done")


def test_a_spool_root_of_roots_that_others_may_write_to_is_viewed(tmp_path: Path) -> None:
    """Root's own spool root, group-writable: a member could swap a folder as well as the
    owner could (h325: root's purge emptied a root-only folder through it)."""
    root = tmp_path / "spool"
    assert _spoolq("init", "--spool-dir", str(root)).returncode == 0
    root.chmod(0o775)
    assert guarded(Layout(root)).view is not None


def test_one_view_a_spool_for_a_process_however_many_clients(open_dir: Path) -> None:
    """Client.from_settings made per call held ten descriptors and a folder each (h325:
    3,006 descriptors after 300 calls)."""
    root, _ = _nobodys_spool(open_dir)
    first = guarded(Layout(root))
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert guarded(Layout(root)) is first
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_view_is_made_again_when_a_folder_moved_and_refused_for_a_link(
        open_dir: Path, tmp_path: Path) -> None:
    root, _ = _nobodys_spool(open_dir)
    first = guarded(Layout(root))
    (root / "done").rename(root / "done.moved")
    (root / "done").mkdir()
    second = guarded(Layout(root))
    assert second is not first and second.view is not None
    shutil.rmtree(root / "done")
    (root / "done").symlink_to(tmp_path)
    with pytest.raises(SpoolIOError, match="done is a symlink"):
        guarded(Layout(root))


def test_paths_through_a_view_are_shown_as_the_real_ones(open_dir: Path) -> None:
    root, _ = _nobodys_spool(open_dir)
    layout = guarded(Layout(root))
    through = f"{layout.folder(JobState.FAILED)}/x.json"
    assert through.startswith("/proc/self/fd/")
    assert shown(f"cannot read it ({through})") == f"cannot read it ({root}/failed/x.json)"


def test_the_views_removal_never_follows_its_name(open_dir: Path) -> None:
    """The view's folder renamed away and a link to a root-only folder put at its name
    (a $TMPDIR the owner may write to): the removal at exit emptied that folder (h325)."""
    root, secret = _nobodys_spool(open_dir)
    (secret / "failed").write_text("root's own")
    layout = guarded(Layout(root))
    (view,) = [v for v in view_module._views.values() if v.layout is layout]
    moved = open_dir / "moved-view"
    os.rename(view.path, moved)
    os.symlink(secret, view.path)
    view.release()
    assert (secret / "failed").read_text() == "root's own"
    assert sorted(p.name for p in moved.iterdir()) == []  # its own links went
    os.unlink(view.path)


def test_roots_data_synth_does_not_write_through_the_owners_symlink(open_dir: Path) -> None:
    """The owner's link at ``data`` had root write its CSV files into a root-only folder
    (h325); a real folder there is written as before."""
    root, secret = _nobodys_spool(open_dir)
    (root / "data").symlink_to(secret)
    os.lchown(root / "data", NOBODY, NOBODY)
    done = _spoolq("data", "synth", "--spool-dir", str(root), "--symbols", "2", "--bars", "5")
    assert list(secret.iterdir()) == []
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"data synth failed: {root}/data is no folder root will write to" in done.stderr
    (root / "data").unlink()
    (root / "data").mkdir()
    os.chown(root / "data", NOBODY, NOBODY)
    done = _spoolq("data", "synth", "--spool-dir", str(root), "--symbols", "2", "--bars", "5")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "data").iterdir()) == ["S0000.csv", "S0001.csv"]


def test_roots_plain_init_of_a_users_spool_short_of_a_folder_says_to_run_it_as_that_user(
        open_dir: Path) -> None:
    """A user's spool made before ``offers/`` (which its processor makes) is short of a
    folder: root's plain ``spoolq init`` refuses to make it root's, and said only to mend
    it as a system spool (``--system``), which a user's own spool is not (QA h417).  It
    names the user to run it as, and makes nothing."""
    root, _ = _nobodys_spool(open_dir)
    (root / "offers").rmdir()
    done = _spoolq("init", "--spool-dir", str(root))
    assert done.returncode == 1, (done.stdout, done.stderr)
    user = pwd.getpwuid(NOBODY).pw_name
    assert done.stderr.strip() == (
        f"spoolq: error: {root} is {user}'s (uid {NOBODY}): run spoolq init as that user "
        f"(sudo -u {user} spoolq init --spool-dir {root}), or, for a system spool, mend it "
        "with its owners and modes as root: spoolq init --system --user USER --group GROUP")
    assert not (root / "offers").exists()


def test_roots_plain_init_of_a_nameless_uids_spool_names_the_uid_as_sudo_takes_it(
        open_dir: Path) -> None:
    """A spool of a uid with no user name: ``sudo -u 4242`` looks up a user named
    "4242" (unknown user); sudo takes a uid as ``#4242`` (QA h419)."""
    uid = next(n for n in range(4242, 70000) if not has_passwd_entry(n))
    root, _ = _nobodys_spool(open_dir)
    for path in [root, *root.rglob("*")]:
        os.lchown(path, uid, uid)
    (root / "offers").rmdir()
    done = _spoolq("init", "--spool-dir", str(root))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        f"spoolq: error: {root} is uid {uid}'s (no user of that name): run spoolq init as "
        f"that user (sudo -u '#{uid}' spoolq init --spool-dir {root}), or, for a system "
        "spool, mend it with its owners and modes as root: spoolq init --system --user "
        "USER --group GROUP")
    assert not (root / "offers").exists()


def test_a_process_pins_a_spool_whose_folders_keep_moving_a_bounded_number_of_times(
        open_dir: Path) -> None:
    """Each view is kept to the end (a client may still use it): another user moving a
    folder before each call had a long-running root process run out of descriptors
    (h327: 20,000 in 25 s); past MOST_VIEWS it is refused in one line."""
    root, _ = _nobodys_spool(open_dir)
    fds = len(os.listdir("/proc/self/fd"))
    for n in range(view_module.MOST_VIEWS + 3):
        (root / "done").rename(root / f"done.{n}")
        (root / "done").mkdir()
        try:
            guarded(Layout(root))
        except SpoolIOError as exc:
            assert n >= view_module.MOST_VIEWS, exc
            assert "moved" in str(exc) and "will not pin them again" in str(exc)
        else:
            assert n < view_module.MOST_VIEWS
    per_view = len(FOLDER_NAMES) + 1  # each folder pinned, and the view's own folder
    assert len(os.listdir("/proc/self/fd")) <= fds + per_view * view_module.MOST_VIEWS


def test_a_refused_view_leaves_nothing_behind(open_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A pin refused (a folder that is a symlink) left its private folder and its
    descriptors until exit, one more each call (h327)."""
    root, secret = _nobodys_spool(open_dir)
    _link(root, "running", secret)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(SpoolIOError, match="running is a symlink"):
            guarded(Layout(root))
    assert list(tmp_path.iterdir()) == []
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_view_folder_found_holding_anything_is_refused(
        open_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A view left by a killed command, slipped in at the new view's name by another
    user of $TMPDIR, would have its stale links used for folders absent from the spool
    (h327): a view's folder must be new and empty."""
    root, _ = _nobodys_spool(open_dir)
    stale = tmp_path / "stale"
    stale.mkdir(mode=0o700)
    (stale / "stage").symlink_to("/root")
    real_mkdtemp = tempfile.mkdtemp

    def swapped(*args: object, **kwargs: object) -> str:
        made = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        os.rmdir(made)
        os.rename(stale, made)  # what the other user does between the two calls
        return made

    monkeypatch.setattr(tempfile, "mkdtemp", swapped)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # what it made stays there
    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(SpoolIOError, match="was replaced as it was made"):
        guarded(Layout(root))
    (left,) = tmp_path.glob("spoolq-rootview-*")  # not the view's to remove: not its own
    assert [p.name for p in left.iterdir()] == ["stage"]


def test_data_synth_says_what_stands_at_its_folder_by_its_real_name(open_dir: Path) -> None:
    """A file at ``data`` was a raw FileExistsError; the folder gone mid-run, a path
    under /proc/self/fd (h327)."""
    root, _ = _nobodys_spool(open_dir)
    (root / "data").write_text("not a folder")
    done = _spoolq("data", "synth", "--spool-dir", str(root), "--symbols", "1", "--bars", "5")
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"data synth failed: cannot write the data files in {root}/data: File exists"), \
        done.stderr


_HOLDER = """
import sys, time
from pathlib import Path
from spool.layout import Layout
from spool.view import guarded
guarded(Layout(Path(sys.argv[1])))
print("viewing", flush=True)
time.sleep(120)
"""


def _viewing(root: Path, tmpdir: Path) -> subprocess.Popen[str]:
    """A root process holding a view of ``root``'s folders in ``tmpdir``."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)], text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmpdir)})
    assert holder.stdout is not None and holder.stdout.readline() == "viewing\n"
    return holder


def _aged(folder: Path) -> Path:
    """``folder`` as a view's made long enough ago to be swept once unlocked."""
    old = folder.stat().st_mtime - 2 * view_module.SWEEP_AGE_S
    os.utime(folder, (old, old))
    return folder


def test_a_killed_commands_view_is_removed_by_the_next_one(open_dir: Path,
                                                           tmp_path: Path) -> None:
    """SIGKILL skips the exit handler that removes a view: the next root command in that
    $TMPDIR removes it, its maker's lock gone with the maker."""
    root, _ = _nobodys_spool(open_dir)
    holder = _viewing(root, tmp_path)
    holder.kill()
    holder.communicate()
    (left,) = tmp_path.glob(f"{view_module.PREFIX}*")
    assert sorted(p.name for p in left.iterdir()) == sorted(
        p.name for p in root.iterdir() if p.is_dir())  # a link per folder, dangling
    _aged(left)
    listed = _spoolq("ls", "--spool-dir", str(root), tmpdir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_live_processs_view_is_not_swept_however_old(open_dir: Path,
                                                       tmp_path: Path) -> None:
    root, _ = _nobodys_spool(open_dir)
    holder = _viewing(root, tmp_path)
    try:
        (held,) = tmp_path.glob(f"{view_module.PREFIX}*")
        links = sorted(p.name for p in _aged(held).iterdir())
        listed = _spoolq("ls", "--spool-dir", str(root), tmpdir=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert list(tmp_path.iterdir()) == [held]
        assert sorted(p.name for p in held.iterdir()) == links
    finally:
        holder.kill()
        holder.communicate()


def test_a_folder_named_like_a_view_holding_anything_else_is_left(
        open_dir: Path, tmp_path: Path) -> None:
    root, _ = _nobodys_spool(open_dir)
    other = tmp_path / f"{view_module.PREFIX}someone"
    other.mkdir(mode=0o700)
    (other / "pending").symlink_to("/proc/self/fd/3")
    (other / "notes.txt").write_text("root's own")
    foreign = tmp_path / f"{view_module.PREFIX}nobody"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    _aged(other), _aged(foreign)
    listed = _spoolq("ls", "--spool-dir", str(root), tmpdir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(tmp_path.iterdir()) == sorted([other, foreign])
    assert (other / "notes.txt").read_text() == "root's own"


def test_a_live_view_whose_lock_failed_is_not_swept(
        open_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its lock not taken (ENOLCK; a $TMPDIR whose locks are another host's), a live
    view was swept as a killed command's once a minute old: its links unlinked, every
    path of the process through it ENOENT (h337).  It is marked, and left."""
    root, _ = _nobodys_spool(open_dir)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    with monkeypatch.context() as patched:
        patched.setattr(view_module.fcntl, "flock", no_locks)
        layout = guarded(Layout(root))
    (held,) = tmp_path.glob(f"{view_module.PREFIX}*")
    _aged(held)
    listed = _spoolq("ls", "--spool-dir", str(root), tmpdir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert held.is_dir() and os.path.isdir(layout.folder(JobState.PENDING))
    view_module.release_all()
    assert list(tmp_path.iterdir()) == []
