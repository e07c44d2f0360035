"""The ``.env`` of the working directory never makes a program hang on its settings.

A FIFO named ``.env`` (pydantic-settings reads FIFOs, waiting for a writer that
never comes), a socket or a device is refused with one line naming it; a regular
file is read as before, and a directory (a virtualenv named ``.env``) is passed
over.  Real processes in a real directory; each run has a deadline, so a hang is
a failure rather than a stuck suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

DEADLINE_S = 20
PROGRAMS = {
    "spoolq": [sys.executable, "-m", "spool.cli.main", "stats"],
    "spool-processor": [sys.executable, "-m", "processor"],
    "spool-statusd": [sys.executable, "-m", "statusd"],
}


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def _device_link(path: Path) -> None:
    path.symlink_to("/dev/zero")  # reading it would never end


def run(cwd: Path, argv: list[str], spool_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPOOL_DIR": str(spool_dir), "SPOOL_FSYNC": "never",
           "STATUSD_PORT": "0"}
    try:
        return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv} hung on the .env in {cwd} for {DEADLINE_S} s")


@pytest.mark.parametrize(("make", "kind"), [(_fifo, "a FIFO"), (_socket, "a socket"),
                                            (_device_link, "a device")])
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_env_that_is_no_regular_file_is_refused_in_one_line(
        tmp_path: Path, root: Path, make: Callable[[Path], None], kind: str,
        program: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    make(work / ".env")
    proc = run(work, PROGRAMS[program], root)
    assert proc.returncode == 2, (program, proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and ".env" in lines[0] and kind in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_regular_env_is_still_read_and_a_directory_passed_over(tmp_path: Path,
                                                                  root: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"SPOOL_DIR={tmp_path / 'elsewhere'}\n")
    env = {k: v for k, v in os.environ.items() if k != "SPOOL_DIR"}
    proc = subprocess.run([*PROGRAMS["spoolq"]], cwd=work, env=env, capture_output=True,
                          text=True, timeout=DEADLINE_S, check=False)
    assert proc.returncode == 1 and "elsewhere" in proc.stderr, proc.stderr  # not initialised
    (work / ".env").unlink()
    (work / ".env").mkdir()  # python -m venv .env
    proc = run(work, PROGRAMS["spoolq"], root)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_bad_value_from_the_env_file_says_it_came_from_there(tmp_path: Path, root: Path,
                                                               program: str) -> None:
    """'invalid setting SPOOL_FSYNC: ...' sent an operator to `env`, which had none."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("spool_fsync=bogus\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "STATUSD_"))}
    proc = subprocess.run(PROGRAMS[program], cwd=work, env={**env, "SPOOL_DIR": str(root)},
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith(f"(set in {work / '.env'})"), proc.stderr
    # Set in the environment, it is the environment's: no word of the file, whatever the
    # case of its name (the settings read names without regard to it).
    for name in ("SPOOL_FSYNC", "spool_fsync"):
        proc = subprocess.run(PROGRAMS[program], cwd=work,
                              env={**env, "SPOOL_DIR": str(root), name: "bogus"},
                              capture_output=True, text=True, timeout=DEADLINE_S,
                              check=False)
        assert proc.returncode == 2 and ".env" not in proc.stderr, (name, proc.stderr)



@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_env_with_a_byte_order_mark_is_read_from_its_first_line(tmp_path: Path, root: Path,
                                                                  program: str) -> None:
    """A ``.env`` saved on Windows (PowerShell 5's ``Out-File -Encoding utf8``, Notepad's
    "UTF-8 with BOM") starts with a byte order mark: its first variable was read as
    "\ufeffSPOOL_DIR", no setting, and dropped without a word, so every program ran on
    the default spool (`spoolq stats`: "~/.local/state/spoolq is not an initialised
    spool ... SPOOL_DIR is not set") (QA h401)."""
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "STATUSD_"))}
    env |= {"HOME": str(tmp_path), "STATUSD_PORT": "0"}
    (work / ".env").write_bytes(b"\xef\xbb\xbfSPOOL_DIR=" + os.fsencode(root) + b"\r\n")
    if program == "spoolq":
        proc = subprocess.run(PROGRAMS[program], cwd=work, env=env, capture_output=True,
                              text=True, timeout=DEADLINE_S, check=False)
        assert proc.returncode == 0 and proc.stdout.startswith("pending"), proc.stderr
    (work / ".env").write_bytes(b"\xef\xbb\xbfspool_fsync=bogus\r\n")
    proc = subprocess.run(PROGRAMS[program], cwd=work, env={**env, "SPOOL_DIR": str(root)},
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith(f"(set in {work / '.env'})"), proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the .env to another user with chown")
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_another_users_env_is_not_read(tmp_path: Path, root: Path, program: str) -> None:
    """Run in a shared folder, another user's ``.env`` chose the spool that ``init
    --system`` (as root) handed to the spool user, and the SPOOL_TOOLS modules a
    processor imports (QA): it is refused in one line, as a file of neither this user
    nor root."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"SPOOL_DIR={tmp_path / 'theirs'}\nSPOOL_TOOLS=evil\n")
    os.chown(work / ".env", 12345, 12345)
    proc = run(work, PROGRAMS[program], root)
    assert proc.returncode == 2, (program, proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "belongs to uid 12345" in lines[0], proc.stderr
    assert not (tmp_path / "theirs").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the .env to another user with chown")
def test_the_env_named_is_the_strangers_and_sudos_own_is_read(tmp_path: Path,
                                                                root: Path) -> None:
    """A root-owned .env through a symlink of another user was refused naming the file
    it points to, root's (the session's own review); and `sudo spoolq ...` run from one's
    own checkout reads one's own .env (SUDO_UID), as before the refusal."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "real.env").write_text(f"SPOOL_DIR={root}\n")
    (work / ".env").symlink_to("real.env")
    os.lchown(work / ".env", 12345, 12345)
    proc = run(work, PROGRAMS["spoolq"], root)
    assert proc.returncode == 2 and f"not reading {work / '.env'}: it belongs to uid 12345" \
        in proc.stderr, proc.stderr
    os.lchown(work / ".env", 0, 0)
    os.chown(work / "real.env", 12345, 12345)
    env = {k: v for k, v in os.environ.items() if k != "SPOOL_DIR"}
    sudo = subprocess.run(PROGRAMS["spoolq"], cwd=work, env={**env, "SUDO_UID": "12345"},
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert sudo.returncode == 0, sudo.stderr


@pytest.mark.parametrize("head", [b"", b"\xef\xbb\xbf"])
def test_a_env_that_is_not_utf8_names_the_files_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: bytes) -> None:
    """The bad byte's offset is the file's, a byte order mark counted: read past the mark,
    it was 3 short (h407)."""
    from spool.errors import ConfigError  # noqa: PLC0415 - as the programs above load it
    from spool.settings import load_settings  # noqa: PLC0415

    data = head + b"SPOOL_DIR=/srv/caf\xe9\r\n"
    (tmp_path / ".env").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOL_DIR", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"cannot read .env: not UTF-8 (byte {data.index(0xE9)})"
