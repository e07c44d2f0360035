"""``spoolq init --system``: Postfix-style permissions on a real spool."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import test_install_users

from spool.cli import system
from spool.layout import Layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="init --system changes owners: root")


def test_drop_folders_are_setgid_and_group_writable_the_rest_private(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    env = {**os.environ, "SPOOL_DIR": str(root)}
    cmd = [sys.executable, "-m", "spool.cli.main", "init", "--system", "--user", "nobody",
           "--group", "nogroup"]
    for _ in range(2):  # idempotent
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    for name in ("pending", "tmp"):
        st = os.stat(root / name)
        assert stat.S_IMODE(st.st_mode) == 0o3730, name
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nogroup.gr_gid)
    for name in ("running", "done", "failed", "progress", "cancel", "owners"):
        st = os.stat(root / name)
        assert stat.S_IMODE(st.st_mode) == 0o750, name
        assert st.st_uid == nobody.pw_uid and st.st_gid == nobody.pw_gid
    st = os.stat(root / "stage")  # the processor's own staging: nobody else's to read
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == nobody.pw_uid and st.st_gid == nobody.pw_gid


@pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd (shadow)")
@pytest.mark.parametrize("usergroups", ["yes", "no"])
@pytest.mark.parametrize("group", ["nogroup", "no-such-user-x"])
def test_unknown_user_is_one_clear_line_whose_useradd_makes_it_as_init_wants(
        tmp_path: Path, usergroups: str, group: str) -> None:
    """The hint left out ``--user-group`` (where login.defs does not make one, the
    units' ``Group=spoolq`` was none) and the submit group, which init then required
    (QA: an operator following the hint met a second error); a path with a space was
    not quoted, and a submit group of the user's name made useradd fail (review)."""
    env = {**os.environ, "SPOOL_DIR": str(tmp_path / "the spool")}
    proc = subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--system",
                           "--user", "no-such-user-x", "--group", "nogroup"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    said = proc.stderr
    if group != "nogroup":  # a group of the user's name is no group of this host's
        said = "e.g. " + system._useradd("no-such-user-x", Layout(tmp_path / "the spool"),
                                         group)
    hint = shlex.split(said.split("e.g. ", 1)[1])
    assert hint[0] == "useradd", proc.stderr
    accounts = tmp_path / "accounts"
    test_install_users.fake_etc(accounts, usergroups)
    subprocess.run(["groupadd", "--root", str(accounts), "--system", group], check=True)
    subprocess.run([hint[0], "--root", str(accounts), *hint[1:]], check=True)
    users = test_install_users.entries(accounts / "etc/passwd")
    groups = test_install_users.entries(accounts / "etc/group")
    user = users["no-such-user-x"]
    assert user[5] == str(tmp_path / "the spool")
    assert user[3] == groups["no-such-user-x"][2]  # a group of its own
    # init's check passes: the submit group is its primary group, or it is a member.
    assert user[3] == groups[group][2] or "no-such-user-x" in groups[group][3].split(",")


def test_a_submit_under_umask_077_is_still_readable_by_the_submit_group(tmp_path: Path) -> None:
    """docs/operations.md, Permissions: ``spoolq submit`` drops are 0640 whatever the umask
    (an integration's own files follow its umask: with 077 they are quarantined)."""
    root = tmp_path / "spool"
    env = {**os.environ, "SPOOL_DIR": str(root)}
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--system", "--user",
                    "nobody", "--group", "nogroup"], env=env, check=True, capture_output=True)
    submit = ("import os, sys; os.umask(0o077); from spool.cli.main import main; "
              "sys.exit(main(['submit', 'echo', '--id', 'private']))")
    subprocess.run([sys.executable, "-c", submit], env=env, check=True, capture_output=True)
    st = os.stat(root / "pending" / "private.json")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid


def _init_system(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir", str(root),
                           "init", "--system", "--user", "nobody", "--group", "nogroup"],
                          capture_output=True, text=True, check=False, timeout=60)


def test_a_folder_that_holds_other_files_and_no_spool_is_not_taken_over(
        tmp_path: Path) -> None:
    """A typo (``/var/spool``), or a SPOOL_DIR from someone else's .env, was handed to
    the spool user whole: "spool ready", its owner changed (QA)."""
    root = tmp_path / "victim"
    root.mkdir(mode=0o700)
    (root / "secret").write_text("x")
    proc = _init_system(root)
    assert proc.returncode == 1 and "holds other files (secret) and no spool" in proc.stderr
    assert os.stat(root).st_uid == 0 and sorted(os.listdir(root)) == ["secret"]
    (root / "secret").unlink()  # empty: taken, as a new one is
    assert _init_system(root).returncode == 0
    (root / "progress").rmdir()  # a spool short of a folder: mended
    proc = _init_system(root)
    assert proc.returncode == 0 and (root / "progress").is_dir(), proc.stderr


def test_a_symlink_to_the_spool_is_followed_when_root_owns_it(tmp_path: Path) -> None:
    """operations.md advises a short symlink to a spool whose path is too long; init
    --system refused it as "not a directory".  One of another user is still refused:
    it could point root's chown anywhere."""
    real = tmp_path / "real"
    link = tmp_path / "short"
    link.symlink_to(real)
    assert _init_system(link).returncode == 0
    assert os.stat(real / "pending").st_uid == pwd.getpwnam("nobody").pw_uid
    theirs = tmp_path / "theirs"
    theirs.symlink_to(real)
    os.lchown(theirs, 12345, 12345)
    proc = _init_system(theirs)
    assert proc.returncode == 1 and "is a symlink of uid 12345" in proc.stderr, proc.stderr


def test_a_system_spool_short_of_a_folder_is_mended_with_its_owners(tmp_path: Path) -> None:
    """The advice "run 'spoolq init'", taken as root, made the missing folders root's
    (0750), and the spool user's processor then failed on them (QA): the advice names
    --system, and a plain init by root of another user's spool is refused."""
    root = tmp_path / "spool"
    assert _init_system(root).returncode == 0
    (root / "progress").rmdir()
    stats = subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir", str(root),
                            "stats"], capture_output=True, text=True, check=False, timeout=60)
    assert stats.returncode == 1 and "missing progress" in stats.stderr, stats.stderr
    assert "'spoolq init --system --user USER --group GROUP' as root" in stats.stderr
    plain = subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir", str(root),
                            "init"], capture_output=True, text=True, check=False, timeout=60)
    assert plain.returncode == 1 and "--system" in plain.stderr, plain.stderr
    assert not (root / "progress").exists()
    assert _init_system(root).returncode == 0
    assert os.stat(root / "progress").st_uid == pwd.getpwnam("nobody").pw_uid


def test_a_volumes_root_and_a_root_with_its_data_first_are_taken(tmp_path: Path) -> None:
    """The refusal of a folder holding other files took a new filesystem's lost+found,
    or a data/ filled first (the default SPOOL_DATA_DIR), for other files (the session's
    own review)."""
    for made in ("lost+found", "data"):
        root = tmp_path / made.replace("+", "_")
        (root / made).mkdir(parents=True)
        proc = _init_system(root)
        assert proc.returncode == 0, proc.stderr
        assert (root / "pending").is_dir()
    # Not a folder named as one of the spool's: a shared tmp/ (1777) alone was handed to
    # the spool user, its mode made 3730 (the same review of that).
    shared = tmp_path / "shared"
    (shared / "tmp").mkdir(parents=True)
    (shared / "tmp").chmod(0o1777)
    proc = _init_system(shared)
    assert proc.returncode == 1 and "holds other files (tmp) and no spool" in proc.stderr
    assert stat.S_IMODE(os.stat(shared / "tmp").st_mode) == 0o1777


def test_a_plain_init_of_a_whole_system_spool_by_root_stays_harmless(tmp_path: Path) -> None:
    """Refusing a plain init by root of another user's spool short of a folder refused
    one of a whole spool too, which the help calls harmless (the session's own review)."""
    root = tmp_path / "spool"
    assert _init_system(root).returncode == 0
    plain = subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir", str(root),
                            "init"], capture_output=True, text=True, check=False, timeout=60)
    assert plain.returncode == 0, plain.stderr


@pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd (shadow)")
def test_the_useradd_hint_takes_a_group_of_the_users_name_that_is_there(
        tmp_path: Path) -> None:
    """A group named like the missing user already there (``spoolq``, the submit group
    ``spoolq-submit``): ``--user-group`` failed, useradd exit 9 (the second review)."""
    name = next((g for g in ("staff", "users", "src") if _group_only(g)), None)
    if name is None:
        pytest.skip("no group here without a user of its name")
    hint = shlex.split(system._useradd(name, Layout(tmp_path / "spool"), "nogroup"))
    accounts = tmp_path / "accounts"
    test_install_users.fake_etc(accounts, "yes")
    for group in (name, "nogroup"):
        subprocess.run(["groupadd", "--root", str(accounts), "--system", group], check=True)
    subprocess.run([hint[0], "--root", str(accounts), *hint[1:]], check=True)
    users = test_install_users.entries(accounts / "etc/passwd")
    groups = test_install_users.entries(accounts / "etc/group")
    assert users[name][3] == groups[name][2]
    assert name in groups["nogroup"][3].split(",")


@pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd (shadow)")
@pytest.mark.parametrize("user", ["no-such-user-x", "nobody"])
def test_every_missing_account_is_said_at_once_and_its_commands_make_them(
        tmp_path: Path, user: str) -> None:
    """With neither the submit group nor the user there, init said the group; once it was
    made, the user; for a user that was there, its membership: one error a run, each
    after following the last hint (QA).  One line names every command, run as written."""
    env = {**os.environ, "SPOOL_DIR": str(tmp_path / "spool")}
    proc = subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--system",
                           "--user", user, "--group", "no-such-group-x"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no group 'no-such-group-x'" in proc.stderr
    assert ("no user" in proc.stderr) == (user != "nobody")
    commands = [shlex.split(part) for part in proc.stderr.split("e.g. ", 1)[1].split("&&")]
    assert [c[0] for c in commands] == (["groupadd", "useradd"] if user != "nobody" else
                                        ["groupadd", "usermod"])
    accounts = tmp_path / "accounts"
    test_install_users.fake_etc(accounts, "no")
    if user == "nobody":
        subprocess.run(["useradd", "--root", str(accounts), "--system", user], check=True)
    for command in commands:
        subprocess.run([command[0], "--root", str(accounts), *command[1:]], check=True)
    users = test_install_users.entries(accounts / "etc/passwd")
    groups = test_install_users.entries(accounts / "etc/group")
    # init's check passes now: the submit group is the user's, or it is a member.
    assert user in groups["no-such-group-x"][3].split(","), (users[user], groups)


def _group_only(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False
