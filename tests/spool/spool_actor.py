"""A real process acting on a spool, driven by the spool tests.

Usage: ``python spool_actor.py ROOT FSYNC COMMAND JSON_ARGS``

``hold``   claim ``ids`` (and take owner lease ``owner``), publish progress for
           each, publish a done record for the ``finish`` ids without removing
           their running file (a completion cut short), stage a live tmp file
           when ``stage_tag`` is given; print ``READY <json>``; then, per stdin
           line, ``complete`` completes every claim (prints ``COMPLETED``),
           and end of input exits.  The test SIGKILLs it to simulate a crash.
``race``   print ``READY``, wait for the file ``go``, then claim and complete
           every job it can from ``pending/``; write the claimed ids as JSON to
           ``out``.
``stage``  perform ``ops`` (renames into ``tmp/`` named like a transition cut
           short, see ``layout.staging``), write half-written ``dead_tmp``
           staging files, print ``STAGED <json>`` and exit, leaving them behind.
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from spool.claim import Claim
from spool.fsops import Mover
from spool.ids import id_from_name
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.lease import OwnerLease
from spool.models import Job, OwnerStatus, Progress
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool


def record_for(claim: Claim, result: Any) -> Any:
    job = Job.model_validate_json(claim.data)
    record = record_from_job(job, claim.job_id, JobState.DONE, claim.mtime_ns)
    now = datetime.now(UTC)
    return record.model_copy(update={"result": result, "attempts": job.attempts + 1,
                                     "started_at": now, "finished_at": now,
                                     "pid": os.getpid()})


def hold(spool: Spool, args: dict[str, Any]) -> None:
    layout = spool.layout
    lease = None
    if args.get("owner"):
        owner = args["owner"]
        lease = OwnerLease(layout.owner_lock(owner))
        now = datetime.now(UTC)
        status = OwnerStatus(owner=owner, pid=os.getpid(), host=spool.host, version="test",
                             started_at=now, heartbeat_at=now)
        spool.mover.publish(layout.owner_status(owner), status.model_dump_json().encode())
    claims: list[Claim] = []
    for job_id in args.get("ids", []):
        claim = spool.claim(job_id)
        if claim is None:
            print(f"LOST {job_id}", flush=True)
            return
        claims.append(claim)
        progress = Progress(fraction=0.5, message="holding", pid=os.getpid(),
                            owner=args.get("owner"))
        spool.mover.publish(layout.progress_file(job_id), progress.model_dump_json().encode())
    for claim in claims:
        if claim.job_id in args.get("finish", []):
            spool.publish_terminal(record_for(claim, {"finished_by": os.getpid()}))
    if args.get("stage_tag"):
        layout.staging(args["stage_tag"]).write_bytes(b"being written by a live process")
    print("READY " + orjson.dumps([c.job_id for c in claims]).decode(), flush=True)
    for line in sys.stdin:
        if line.strip() == "complete":
            for claim in claims:
                spool.complete(claim, record_for(claim, {"by": os.getpid()}))
            claims = []
            print("COMPLETED", flush=True)
    for claim in claims:
        claim.close()
    if lease is not None:
        lease.release()


def race(spool: Spool, args: dict[str, Any]) -> None:
    pending = spool.layout.folder(JobState.PENDING)
    go = Path(args["go"])
    print("READY", flush=True)
    while not go.exists():
        time.sleep(0.001)
    claimed: list[str] = []
    names = os.listdir(pending)
    while names:
        if args.get("shuffle"):
            random.shuffle(names)
        for name in names:
            job_id = id_from_name(name)
            if job_id is None:
                continue
            claim = spool.claim(job_id)
            if claim is None:
                continue
            claimed.append(job_id)
            spool.complete(claim, record_for(claim, {"by": os.getpid()}))
        names = os.listdir(pending)
    spool.mover.flush()
    Path(args["out"]).write_bytes(orjson.dumps(claimed))


def stage(spool: Spool, args: dict[str, Any]) -> None:
    """Each op: {"from": [state, name], "tag": tag} renamed into tmp/ as a staging file."""
    layout = spool.layout
    staged = []
    for op in args["ops"]:
        state, name = op["from"]
        src = layout.entry(JobState(state), name)
        dst = layout.staging(op["tag"])
        if not spool.mover.move(src, dst, replace=False):
            raise SystemExit(f"cannot stage {src}")
        staged.append(dst.name)
    for tag in args.get("dead_tmp", []):
        half = layout.staging(tag)
        half.write_bytes(b'{"half": "written')
        staged.append(half.name)
    print("STAGED " + orjson.dumps(staged).decode(), flush=True)


def main() -> None:
    root, mode, command, raw = sys.argv[1:5]
    layout = Layout(Path(root))
    spool = Spool(layout, Mover(layout, FsyncMode(mode)))
    args = orjson.loads(raw)
    {"hold": hold, "race": race, "stage": stage}[command](spool, args)


if __name__ == "__main__":
    main()
