"""What a periodic recovery pass costs with a large ``failed/``, counted in system calls.

A processor runs a pass on its loop every SPOOL_SCAN_S, and FAST jobs wait behind it.
``failed/`` only shrinks by ``spoolq purge``: with 20,000 records, a pass that lists it
and looks each name up in ``done/`` held the loop tens of milliseconds every 5 s.  The
passes after the start-up one must cost the same whatever ``failed/`` holds: next to
nothing while neither ``failed/`` nor ``done/`` changes, a bounded slice of lookups while
``done/`` does (every job done changes it), and, in a processor (whose Spool follows
``failed/`` through inotify), a few calls per name changed in ``failed/``.  The calls
are counted with ``strace``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spoolkit import locate, make_spool, read_json

from spool import recheck
from spool.errors import ErrorType
from spool.layout import random_part
from spool.models import ErrorInfo, Record, Source, record_bytes
from spool.recheck import ROTATION_NAMES
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.timeout(120)

D, F = JobState.DONE, JobState.FAILED

# Enough that a pass reading every name of failed/ (as before a8941c0) fails each bound
# below by more than 2x (5,1xx names against 100 and 2,000); 20,000 took 17 s a case,
# most of it writing the records under strace.
FAILED_RECORDS = 5_000
PASSES = 8
# A folder's stamp is trusted once RACY_NS (2 s) has passed since its last change; the
# tests shorten it, so that each waits 0.6 s for a quiet spool, not 2.5 s.  Every pass
# below still runs well inside the window (after a change) or well past it (quiet).
QUICK_RACY_NS = 500_000_000
QUIET_S = 0.6
# The calls that read a folder or look a name up (lstat is newfstatat or statx).
CALLS = "getdents64,faccessat2,faccessat,access,newfstatat,statx,openat"

SCRIPT = """
import os, sys, time
sys.path[:0] = [sys.argv[2]]
from pathlib import Path
import spool.recheck
from spool.fsops import Mover
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.models import Job, record_bytes
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

spool.recheck.RACY_NS = int(sys.argv[7])
layout = Layout(Path(sys.argv[1]))
mover = Mover(layout, FsyncMode.NEVER)
mover.make_folders()
spool = Spool(layout, mover, follow=sys.argv[6] == "follow")
done, failed = layout.folder(JobState.DONE), layout.folder(JobState.FAILED)
data = record_bytes(record_from_job(Job(tool="echo"), "x", JobState.FAILED, time.time_ns()))
for i in range(int(sys.argv[3])):
    (failed / f"f-{i:06d}.json").write_bytes(data)
for i in range(100):
    (done / f"d-{i:03d}.json").write_bytes(data)
time.sleep(float(sys.argv[8]))  # past the folders' last change: their times say so
recovery = Recovery(spool)
recovery.scan()  # the start-up pass: every name
marker = sys.argv[4]
os.access(marker + "-quiet", os.F_OK)
for _ in range(int(sys.argv[5])):
    assert not recovery.scan().changed
os.access(marker + "-busy", os.F_OK)
for i in range(int(sys.argv[5])):
    (done / f"new-{i}.json").write_bytes(data)  # a job done between two passes
    assert not recovery.scan().changed
os.access(marker + "-failed", os.F_OK)
for i in range(int(sys.argv[5])):
    (done / f"more-{i}.json").write_bytes(data)  # a job done and one failed
    (failed / f"more-{i}-x.json").write_bytes(data)
    assert not recovery.scan().changed
os.access(marker + "-end", os.F_OK)
spool.close()
"""


@pytest.fixture
def quick_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, stamps trusted QUICK_RACY_NS after a change (see QUIET_S)."""
    assert QUICK_RACY_NS < recheck.RACY_NS
    monkeypatch.setattr(recheck, "RACY_NS", QUICK_RACY_NS)


def _traced(tmp_path: Path, script: str, *args: str) -> dict[str, int]:
    """Run ``script`` under strace (``sys.argv[1]``: a spool under ``tmp_path``, ``[2]``
    the repository, then ``args``, ``{marker}`` standing for the phases' marker path), and
    :func:`_count` its calls by phase; skipped where strace cannot run."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    repo = str(Path(__file__).resolve().parents[2])
    out = tmp_path / "trace"
    marker = str(tmp_path / "phase")
    proc = subprocess.run([strace, "-f", "-o", str(out), "-e", f"trace={CALLS}",
                           sys.executable, "-c", script, str(tmp_path / "spool"), repo,
                           *(arg.replace("{marker}", marker) for arg in args)],
                          capture_output=True, check=False, timeout=110)
    if proc.returncode != 0 and b"PTRACE" in proc.stderr:
        pytest.skip(f"strace cannot run here: {proc.stderr.decode().strip()}")
    assert proc.returncode == 0, proc.stderr.decode()
    return _count(out.read_text(), marker)


def _count(trace: str, marker: str) -> dict[str, int]:
    """Names read (a directory listing's entries) and other calls made between each
    marker and the next, by the marker's phase name."""
    counts: dict[str, int] = {}
    phase = None
    for line in trace.splitlines():
        if marker in line:
            phase = line.split(marker + "-", 1)[1].split('"', 1)[0]
            counts[phase] = 0
        elif phase is None or "(" not in line or "resumed>" in line:
            continue
        elif (entries := re.search(r"/\* (\d+) entries \*/", line)) is not None:
            counts[phase] += int(entries.group(1))
        elif "getdents64(" not in line:
            counts[phase] += 1
    return counts


@pytest.mark.parametrize("follow", ["follow", "no-follow"])
def test_periodic_passes_cost_does_not_follow_the_size_of_failed(
        tmp_path: Path, follow: str) -> None:
    counts = _traced(tmp_path, SCRIPT, str(FAILED_RECORDS), "{marker}", str(PASSES), follow,
                     str(QUICK_RACY_NS), str(QUIET_S))
    quiet, busy, failed = (counts[phase] / PASSES for phase in ("quiet", "busy", "failed"))
    # Nothing changed: a pass looks at the folders (a few dozen names and calls in all,
    # whatever failed/ holds); it does not list failed/ nor look its names up.
    assert quiet < 100, f"a quiet pass read or looked up {quiet:.0f} names"
    # done/ changed: a bounded slice of failed/'s names is looked up, not all of them.
    assert busy < 2_000, f"a pass after a job was done read or looked up {busy:.0f} names"
    if follow == "follow":
        # failed/ changed too: the names its events name are checked, it is not listed.
        assert failed < 2_000, f"a pass after a job failed read or looked up {failed:.0f}"


def _records(spool: Spool, state: JobState, ids: list[str], **fields: object) -> None:
    """Write records straight into ``state``'s folder, as years of jobs leave them."""
    data = record_bytes(Record.model_validate({"id": "x", "tool": "echo", "state": state,
                                               **fields}))
    for job_id in ids:
        spool.layout.job(state, job_id).write_bytes(data)


@pytest.mark.usefixtures("no_leaks", "quick_recheck")
def test_what_done_alone_gains_is_settled_within_one_turn_after_quiet_passes(
        spool: Spool) -> None:
    """After quiet passes, which check no name, another processor's completion cut short
    (its done record published, the earlier failed one of the id not yet removed) and a
    later run's done record beside a quarantined original are settled within
    ceil(len(failed/) / ROTATION_NAMES) + 1 passes, though only done/ changed."""
    layout = spool.layout
    failed_ids = [f"bad-{i:04d}" for i in range(2500)]
    _records(spool, F, failed_ids, error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="m"))
    layout.original("zzz").write_bytes(b"what a client sent")  # sorts last in failed/
    spool.mover.publish(layout.job(F, "zzz"), record_bytes(Record(
        id="zzz", state=F, error=ErrorInfo(type=ErrorType.INVALID_JOB, message="bad"),
        source=Source(name="zzz.json", size=18, kind="file"))))
    _records(spool, D, [f"fine-{i}" for i in range(20)], result=1)
    time.sleep(QUIET_S)  # past the folders' last change (see spool.recheck)
    recovery = Recovery(spool)
    assert not recovery.scan().changed
    for _ in range(5):
        assert not recovery.scan().changed

    time.sleep(0.03)  # the coarse filesystem clock ticks past the failed records' times
    _records(spool, D, ["bad-2400", "zzz"], result=1)
    bound = math.ceil((len(failed_ids) + 2) / ROTATION_NAMES) + 1
    passes = 0
    while locate(layout, "bad-2400") != [D] or os.path.lexists(layout.original("zzz")):
        passes += 1
        assert passes <= bound, f"not settled within {bound} passes"
        recovery.scan()
    assert passes > 1  # the rotation, not a full pass, found them
    assert locate(layout, "zzz") == [D]
    assert not recovery.scan().changed


@pytest.mark.usefixtures("no_leaks", "quick_recheck")
def test_what_failed_gains_is_settled_by_the_next_pass_of_a_following_spool(
        tmp_path: Path) -> None:
    """A processor's Spool follows failed/ through inotify, and its passes check just the
    names changed there: a cancel's failed record beside the id's older done record, an
    original without its record, and a later run's failed record renamed over a
    quarantine record (same names in failed/, another inode) are all settled by the
    next pass after quiet ones."""
    spool = make_spool(tmp_path / "spool", recycle=True, follow=True)
    assert spool.presence is not None, "tmp_path should be on a local filesystem"
    layout = spool.layout
    try:
        _records(spool, F, [f"bad-{i:04d}" for i in range(3000)],
                 error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="m"))
        _records(spool, D, ["cancelled"], result=1)
        layout.original("rerun").write_bytes(b"the bad drop before")
        spool.mover.publish(layout.job(F, "rerun"), record_bytes(Record(
            id="rerun", state=F, error=ErrorInfo(type=ErrorType.INVALID_JOB, message="bad"),
            source=Source(name="rerun.json", size=19, kind="file"))))
        time.sleep(QUIET_S)  # past the folders' last change (see spool.recheck)
        recovery = Recovery(spool)
        assert not recovery.scan().changed
        for _ in range(5):
            assert not recovery.scan().changed

        time.sleep(0.03)  # the coarse filesystem clock ticks past the done record's time
        spool.mover.publish(layout.job(F, "cancelled"), record_bytes(Record(
            id="cancelled", tool="echo", state=F,
            error=ErrorInfo(type=ErrorType.CANCELLED, message="cancelled while pending"))),
            replace=False)
        layout.original("lost").write_bytes(b"what a client sent")
        spool.mover.publish(layout.job(F, "rerun"), record_bytes(Record(
            id="rerun", tool="echo", state=F,
            error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="a later run"))))

        report = recovery.scan()

        assert sorted(report.restored) == ["lost"] and report.removed == 2
        assert locate(layout, "cancelled") == [F]
        assert read_json(layout.job(F, "lost"))["error"]["type"] == "invalid_job"
        assert not os.path.lexists(layout.original("rerun"))
        assert read_json(layout.job(F, "rerun"))["error"]["message"] == "a later run"
        assert not recovery.scan().changed
    finally:
        spool.mover.drop_spares()
        spool.close()


TMP_SCRIPT = """
import os, sys, time
sys.path[:0] = [sys.argv[2]]
from pathlib import Path
import spool.recheck
from spool.fsops import Mover
from spool.layout import Layout
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.transitions import Spool

spool.recheck.RACY_NS = int(sys.argv[5])
layout = Layout(Path(sys.argv[1]))
mover = Mover(layout, FsyncMode.NEVER)
mover.make_folders()
spool = Spool(layout, mover)
for i in range(int(sys.argv[3])):
    (layout.tmp / f"export-{i:06d}.part").write_bytes(b"half a client's drop")
time.sleep(float(sys.argv[6]))  # past tmp/'s last change: its times say so
recovery = Recovery(spool)
recovery.scan()  # the start-up pass: every file seen once
recovery.scan()  # each seen before, a day from old: tmp/ left unlisted after this one
marker = sys.argv[4]
os.access(marker + "-quiet", os.F_OK)
for _ in range(8):
    assert not recovery.scan().changed
os.access(marker + "-added", os.F_OK)
(layout.tmp / "late.part").write_bytes(b"another")  # tmp/ changed: listed again
assert not recovery.scan().changed
os.access(marker + "-end", os.F_OK)
spool.close()
"""


def test_periodic_passes_do_not_look_again_at_young_junk_in_tmp(tmp_path: Path) -> None:
    """Clients' files in ``tmp/`` (half-written drops, junk) go once a day unchanged:
    listed and looked up each pass, 200,000 of them cost an idle processor a quarter of
    a CPU at ``SPOOL_SCAN_S=2`` (the fifty-fourth session's list).  While ``tmp/`` holds
    nothing else and does not change, a pass does not list it; once it changes, it
    does."""
    counts = _traced(tmp_path, TMP_SCRIPT, "3000", "{marker}", str(QUICK_RACY_NS),
                     str(QUIET_S))
    assert counts["quiet"] / 8 < 100, f"a quiet pass read or looked up {counts['quiet']}"
    assert counts["added"] > 3000, counts  # listed again once tmp/ changed


@pytest.mark.usefixtures("quick_recheck")
def test_stage_files_settled_while_tmp_is_unlisted_are_forgotten(spool: Spool) -> None:
    """While tmp/ was left unlisted, the sightings of stage/'s files settled meanwhile
    were never dropped: one more a pass for as long as tmp/ stayed quiet (h329)."""
    layout = spool.layout
    for i in range(20):
        (layout.tmp / f"export-{i}.part").write_bytes(b"half a client's drop")
    time.sleep(QUIET_S)
    recovery = Recovery(spool)
    for _ in range(3):  # seen, then young: tmp/ is left unlisted from here on
        recovery.scan()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for i in range(10):  # a write cut short by a process that is gone, one a pass
        name = f"=job-{i}.json.{dead.pid}.{random_part()}.tmp"
        (layout.stage / name).write_bytes(b"half a record")
        recovery.scan()
        assert not (layout.stage / name).exists()
    staged = recovery._staged  # sightings kept: tmp/'s 20 files, one of stage/'s at most
    assert len(staged._seen) + len(getattr(staged, "_seen_staged", {})) <= 21
