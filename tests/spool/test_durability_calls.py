"""What each ``SPOOL_FSYNC`` mode asks of the disk, seen in the syscalls a real process
makes (strace): DESIGN section 2, "Durability", and the guarantees of spool/fsops.py.

* ``always``: the record is fsynced before the rename that publishes it, and each folder
  an entry was renamed into (or out of) is fsynced after the rename, so a claim is on
  disk before its run starts and a completion before the run's file leaves ``running/``.
* ``batch``: no fsync per file or folder; the operations are made durable by a
  ``syncfs`` of the spool's filesystem, one per group, the last group at the latest when
  the process is done with the spool (``Mover.flush``; for a client, the end of its
  write: a submit said to be done is on disk, as under ``always``).
* ``never``: no sync call at all.

A power cut is not something a test can make, so these pin the calls themselves: a
dropped fsync, or a batch group never synced, changed no file a test could read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from spoolkit import CLI, CRASH_ACTOR, REPO, make_spool, strace_path, submit

from spool.settings import FsyncMode

pytestmark = pytest.mark.timeout(120)

TRACED = "fsync,fdatasync,syncfs,sync,rename,renameat,renameat2"
SYNCS = ("fsync(", "fdatasync(", "syncfs(", "sync(")
_FD_PATH = re.compile(r"^\w+\(\d+<(.*)>\)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

# The batch transition as the processor makes it: claim, complete, and at its end (or
# at a recovery scan) Mover.flush.
BATCH_RUN = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool
layout = Layout(Path(sys.argv[1]))
spool = Spool(layout, Mover(layout, FsyncMode.BATCH))
claim = spool.claim("x")
assert claim is not None
record = spool.record_of_claim(claim, JobState.DONE)
record.attempts, record.started_at, record.result = 1, datetime.now(UTC), {"ok": True}
spool.complete(claim, record)
spool.mover.flush()
"""


@pytest.fixture(autouse=True)
def _needs_strace() -> None:
    if strace_path() is None:
        pytest.skip("needs strace, allowed to trace")


def traced(argv: list[str], out: Path, env: dict[str, str] | None = None) -> list[str]:
    """The successful syncs and renames ``argv`` made (strace ``-y``: an fd as its path),
    in order, each line without its pid."""
    strace = strace_path()
    assert strace is not None
    run_env = env or {**os.environ}
    run_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([strace, "-f", "-qq", "-y", "-s", "4096", "-o", str(out),
                           "-e", f"trace={TRACED}", *argv],
                          env=run_env, cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = []
    for line in out.read_text().splitlines():
        call = line.split(None, 1)[1] if " " in line else line
        if call.startswith(("rename", *SYNCS)) and call.rstrip().endswith("= 0"):
            calls.append(call)
    return calls


def rename_to(calls: list[str], dst: Path) -> tuple[int, str]:
    """The index of the one rename onto ``dst``, and its source."""
    found = [(i, _QUOTED.findall(call)) for i, call in enumerate(calls)
             if call.startswith("rename")]
    hits = [(i, names[0]) for i, names in found if names[1:2] == [str(dst)]]
    assert len(hits) == 1, calls
    return hits[0]


def fsynced(calls: list[str], start: int = 0, stop: int | None = None) -> list[str]:
    """The paths fsynced in ``calls[start:stop]``."""
    paths = []
    for call in calls[start:stop]:
        if call.startswith("fsync("):
            match = _FD_PATH.match(call)
            assert match is not None, call
            paths.append(match.group(1))
    return paths


def syncs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith(SYNCS)]


def test_always_fsyncs_the_claim_and_the_record_before_anything_relies_on_them(
        tmp_path: Path) -> None:
    root = tmp_path / "spool"
    submit(make_spool(root), "x")
    calls = traced([sys.executable, str(CRASH_ACTOR), str(root), "always", "complete", "x"],
                   tmp_path / "trace")
    claim, source = rename_to(calls, root / "running" / "x.json")
    assert source == str(root / "pending" / "x.json")
    published, staged = rename_to(calls, root / "done" / "x.json")
    # The claim is on disk (both folders) before the run's record is written.
    assert {str(root / "running"), str(root / "pending")} <= set(
        fsynced(calls, claim, published)), calls
    # The record's bytes are on disk before the rename publishes it, and the rename is
    # on disk (done/) right after it.
    assert staged in fsynced(calls, claim, published), calls
    assert str(root / "done") in fsynced(calls, published), calls


def test_never_makes_no_sync_call(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    submit(make_spool(root), "x")
    calls = traced([sys.executable, str(CRASH_ACTOR), str(root), "never", "complete", "x"],
                   tmp_path / "trace")
    rename_to(calls, root / "done" / "x.json")
    assert syncs(calls) == []


def test_batch_syncs_the_filesystem_once_for_the_group_and_no_file_alone(
        tmp_path: Path) -> None:
    root = tmp_path / "spool"
    submit(make_spool(root), "x")
    calls = traced([sys.executable, "-c", BATCH_RUN, str(root)], tmp_path / "trace")
    published, _ = rename_to(calls, root / "done" / "x.json")
    assert fsynced(calls) == [], calls
    assert any(call.startswith("syncfs(") for call in calls[published:]), calls


@pytest.mark.parametrize("mode", list(FsyncMode))
def test_a_submit_is_on_disk_when_spoolq_says_so(
        tmp_path: Path, mode: FsyncMode) -> None:
    """``spoolq submit`` prints the id of a job that is on disk: under ``batch`` its
    group (the one drop) is synced before it exits, as ``always`` syncs the drop.  Before,
    a client's batch was never synced: the Mover flushes a group only at a later
    operation, which a one-shot client never makes."""
    root = tmp_path / "spool"
    make_spool(root)
    env = {**os.environ, "SPOOL_DIR": str(root)}
    calls = traced([*CLI, "--fsync", mode.value, "submit", "echo", "--id", "x"],
                   tmp_path / "trace", env)
    dropped, staged = rename_to(calls, root / "pending" / "x.json")
    if mode is FsyncMode.ALWAYS:
        assert staged in fsynced(calls, 0, dropped), calls
        assert str(root / "pending") in fsynced(calls, dropped), calls
    elif mode is FsyncMode.BATCH:
        assert fsynced(calls) == [], calls
        assert any(call.startswith("syncfs(") for call in calls[dropped:]), calls
    else:
        assert syncs(calls) == [], calls


def test_a_cancel_and_a_retry_are_on_disk_when_spoolq_says_so_under_batch(
        tmp_path: Path) -> None:
    root = tmp_path / "spool"
    submit(make_spool(root), "x")
    env = {**os.environ, "SPOOL_DIR": str(root)}
    for command, dst in (("cancel", root / "failed" / "x.json"),
                         ("retry", root / "pending" / "x.json")):
        calls = traced([*CLI, "--fsync", "batch", command, "x"], tmp_path / command, env)
        moved, _ = rename_to(calls, dst)
        assert fsynced(calls) == [], calls
        assert any(call.startswith("syncfs(") for call in calls[moved:]), (command, calls)


def test_a_cancel_request_is_on_disk_when_spoolq_says_so_under_always(
        tmp_path: Path) -> None:
    """A running job's cancel request: recovery honours it (fails the orphan
    ``cancelled``) only while ``cancel/<id>`` exists; written without its syncs, a power
    cut could lose it after ``spoolq cancel`` said it was in, and the job ran again (a
    review)."""
    root = tmp_path / "spool"
    spool = make_spool(root)
    submit(spool, "x")
    claim = spool.claim("x")  # running, under this process's lease
    assert claim is not None
    env = {**os.environ, "SPOOL_DIR": str(root)}
    calls = traced([*CLI, "--fsync", "always", "cancel", "x"], tmp_path / "trace", env)
    written, staged = rename_to(calls, root / "cancel" / "x")
    assert staged in fsynced(calls, 0, written), calls
    assert str(root / "cancel") in fsynced(calls, written), calls
    claim.close()


def test_a_quarantine_syncs_the_drop_folder_it_moved_the_drop_out_of(
        tmp_path: Path) -> None:
    """Every move syncs both its folders under ``always``; a quarantine's first move (out
    of ``pending/``) synced neither, and ``pending/`` never: after a power cut the drop
    could stand in ``pending/`` again beside its ``failed/<id>.orig`` (a review)."""
    root = tmp_path / "spool"
    make_spool(root)
    (root / "pending" / "bad name!.json").write_bytes(b'{"tool": "echo"}')
    calls = traced([sys.executable, str(CRASH_ACTOR), str(root), "always", "quarantine",
                    "bad name!.json"], tmp_path / "trace")
    moved = [i for i, call in enumerate(calls) if call.startswith("rename")
             and _QUOTED.findall(call)[:1] == [str(root / "pending" / "bad name!.json")]]
    assert len(moved) == 1, calls
    assert str(root / "pending") in fsynced(calls, moved[0]), calls
