"""A refused cancel's re-drop recorded aside under an id of its own (cancellation._record_aside),
its canceller killed between that record and the removal of the staged file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from spoolkit import done_record, listing, make_spool, read_json, submit

from spool.recovery import Recovery
from spool.states import JobState

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED

_KILLED_AFTER_THE_ASIDE_RECORD = """
import sys
sys.path.insert(0, {kit!r})
import orjson, os, signal
from spool import orphans
from pathlib import Path
from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
root = Path({root!r})
asked = []

def newer_drop_first(spool, job_id, *args):
    asked.append(job_id)
    if len(asked) == 1:  # asked before the take: the run not yet ended then
        return orphans.Settle.NOTHING
    (root / "tmp" / "d3").write_bytes(orjson.dumps({{"tool": "echo", "meta": {{"drop": 3}}}}))
    os.rename(root / "tmp" / "d3", root / "pending" / "daily.json")
    return orphans.Settle.LEFT  # its running file not settled now

orphans.drop_if_finished = newer_drop_first
layout = Layout(root)
mover = Mover(layout, FsyncMode.{fsync})
real_unlink = mover.unlink

def unlink(path, *a, **k):
    if Path(path).parent.name == "stage" and Path(path).name.startswith("cancel-"):
        print("aside", sorted(os.listdir(root / "failed")), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the aside record, staging left
    return real_unlink(path, *a, **k)

mover.unlink = unlink
Client(layout, mover).cancel("daily", wait_s=0)
"""


@pytest.mark.parametrize("fsync", ["NEVER", "BATCH", "ALWAYS"])
def test_a_canceller_killed_after_the_aside_record_leaves_no_second_record(
        tmp_path: Path, fsync: str) -> None:
    root = tmp_path / "spool"
    processor = make_spool(root)
    layout = processor.layout
    submit(processor, "daily", max_attempts=25)
    claim = processor.claim("daily")
    assert claim is not None
    processor.publish_terminal(done_record(claim, "first"))
    claim.close()  # the run's processor died between its record and the removal
    submit(processor, "daily", meta={"drop": 2})
    record = layout.job(D, "daily").read_bytes()

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_THE_ASIDE_RECORD.format(
            kit=str(Path(__file__).parent), root=str(root), fsync=fsync)],
        capture_output=True, text=True, timeout=30, check=False)
    assert killed.returncode == -9, killed
    aside = [n for n in listing(layout.folder(F)) if n.endswith(".json")]
    assert len(aside) == 1, killed
    assert [n.startswith("cancel-") for n in listing(layout.stage)] == [True]

    scan = Recovery(processor).scan()
    scan = Recovery(processor).scan()

    drops = [read_json(layout.folder(F) / n).get("meta") for n in listing(layout.folder(F))
             if n.endswith(".json")]
    assert drops == [{"drop": 2}], f"recorded {len(drops)} times: {listing(layout.folder(F))}"
    assert layout.job(D, "daily").read_bytes() == record, "the run's record replaced"
    assert read_json(layout.job(P, "daily"))["meta"] == {"drop": 3}
    assert listing(layout.stage) == []
    assert scan.requeued == scan.abandoned == []
