"""``spool-processor`` started from a working directory that was removed since (a
script's ``cd build; ...; rm -rf build`` before it starts the daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_record

GONE_CWD = ["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"']
"""A prefix that starts the command in the folder given after it, removed first."""


def test_a_removed_working_directory_still_runs_jobs(spool_root: Path, tmp_path: Path
                                                     ) -> None:
    """The forkserver's start asks for the working directory: the processor crashed
    with a traceback (FileNotFoundError in multiprocessing's get_preparation_data) and
    exit 1 before it ran a job.  It runs COMPUTE and FAST jobs now, and stops with 0."""
    gone = tmp_path / "gone"
    gone.mkdir()
    daemon = Daemon(spool_root, tmp_path / "daemon.log", prefix=[*GONE_CWD, str(gone)])
    try:
        daemon.start()
        drop(spool_root, "computed", {"tool": "sleep", "params": {"seconds": 0}})
        drop(spool_root, "fast", {"tool": "echo", "params": {"message": "hi"}})
        assert wait_record(spool_root, "computed", 60)["state"] == "done", daemon.logs()
        assert wait_record(spool_root, "fast", 60)["result"] == {"message": "hi"}
        assert daemon.stop() == 0, daemon.logs()
        assert not gone.exists() and "Traceback" not in daemon.logs(), daemon.logs()
    finally:
        daemon.abort()


@pytest.mark.parametrize("given", ["SPOOL_DIR", "--spool-dir"])
def test_a_relative_spool_dir_from_a_removed_directory_is_refused(spool_root: Path,
                                                                  tmp_path: Path,
                                                                  given: str) -> None:
    """A relative SPOOL_DIR was read from ``/`` once the processor left its removed
    working directory: it took the jobs of whatever spool stood there (here the test's,
    named from ``/``), where spoolq and statusd refuse that setting by name (exit 2).
    ``--spool-dir`` is refused alike, by its own name (SPOOL_DIR unset: the option alone
    names the spool)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    relative = str(spool_root.relative_to("/"))
    daemon = Daemon(spool_root, tmp_path / "daemon.log", prefix=[*GONE_CWD, str(gone)],
                    SPOOL_DIR=relative)
    if given == "--spool-dir":
        del daemon.env["SPOOL_DIR"]
        daemon.argv += ["--spool-dir", relative]
    try:
        daemon.start(wait_ready=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=20) == 2, daemon.logs()
        assert f"invalid setting {given}: {relative} is relative, and the working directory" \
            " it is relative to was removed; give the whole path" in daemon.logs(), daemon.logs()
    finally:
        daemon.abort()


def test_a_relative_data_dir_from_a_removed_directory_is_refused(spool_root: Path,
                                                                 tmp_path: Path) -> None:
    """A relative SPOOL_DATA_DIR (here in lower case, which the settings read as well)
    was read from ``/`` as the relative SPOOL_DIR was: the tools were given whatever data
    stood there.  Refused by name (exit 2), as that SPOOL_DIR is."""
    gone = tmp_path / "gone"
    gone.mkdir()
    relative = str((tmp_path / "data").relative_to("/"))
    daemon = Daemon(spool_root, tmp_path / "daemon.log", prefix=[*GONE_CWD, str(gone)],
                    spool_data_dir=relative)
    try:
        daemon.start(wait_ready=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=20) == 2, daemon.logs()
        assert f"invalid setting SPOOL_DATA_DIR: {relative} is relative, and the working " \
            "directory it is relative to was removed; give the whole path" in daemon.logs(), \
            daemon.logs()
    finally:
        daemon.abort()


def test_a_spool_dir_under_home_from_a_removed_directory_is_taken(spool_root: Path,
                                                                  tmp_path: Path) -> None:
    """``SPOOL_DIR=~/spool`` is a whole path (the settings expand ``~``), not a relative
    one: from a removed working directory it names the same spool, and the processor
    runs its jobs, where a relative one is refused."""
    gone = tmp_path / "gone"
    gone.mkdir()
    daemon = Daemon(spool_root, tmp_path / "daemon.log", prefix=[*GONE_CWD, str(gone)],
                    HOME=str(spool_root.parent), SPOOL_DIR=f"~/{spool_root.name}")
    try:
        daemon.start()
        drop(spool_root, "home", {"tool": "echo", "params": {"message": "hi"}})
        assert wait_record(spool_root, "home", 60)["state"] == "done", daemon.logs()
        assert daemon.stop() == 0, daemon.logs()
    finally:
        daemon.abort()
