"""Recovery's lookups of ``failed/`` names in ``done/`` on a host that refuses the
``faccessat2`` system call with EPERM, as the seccomp profiles of container runtimes
older than it do (Docker before 20.10.6, libseccomp before 2.4.4): glibc falls back to
another call only on ENOSYS, so ``os.access(..., follow_symlinks=False)`` answered False
for every name there, and an id left in both ``done/`` and ``failed/`` was never settled
by the passes after the first.  The refusal is injected with ``strace``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

SCRIPT = """
import os, sys, time
sys.path[:0] = [sys.argv[2]]
from pathlib import Path
from spool.models import Job, record_bytes
from spool.recovery import Recovery
from spool.states import JobState
from spool.jobfile import record_from_job
from spool.transitions import Spool
from spool.layout import Layout
from spool.fsops import Mover
from spool.settings import FsyncMode

layout = Layout(Path(sys.argv[1]))
mover = Mover(layout, FsyncMode.NEVER)
mover.make_folders()
spool = Spool(layout, mover)
done, failed = layout.folder(JobState.DONE), layout.folder(JobState.FAILED)

def record(job_id, state):
    return record_bytes(record_from_job(Job(tool="echo"), job_id, state, time.time_ns()))

for i in range(40):  # done/ far larger than failed/: the passes look names up
    (done / f"d{i}.json").write_bytes(record(f"d{i}", JobState.DONE))
(failed / "x.json").write_bytes(record("x", JobState.FAILED))
recovery = Recovery(spool)
recovery.scan()
(done / "x.json").write_bytes(record("x", JobState.DONE))  # another process's, newer
recovery.scan()
print(sorted(p.name for p in done.iterdir() if p.name == "x.json"),
      sorted(p.name for p in failed.iterdir()))
"""


def test_a_duplicate_is_settled_where_faccessat2_is_refused(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    repo = str(Path(__file__).resolve().parents[2])
    probe = subprocess.run([strace, "-f", "-o", "/dev/null", "-e",
                            "inject=faccessat2:error=EPERM", sys.executable, "-c", "pass"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot run here: {probe.stderr.decode().strip()}")
    proc = subprocess.run([strace, "-f", "-o", "/dev/null", "-e",
                           "inject=faccessat2:error=EPERM", sys.executable, "-c", SCRIPT,
                           str(tmp_path / "spool"), repo],
                          capture_output=True, check=False, timeout=50)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split("\n")[0] == "['x.json'] []", proc.stdout.decode()
