"""The meddler of ``bench/chaos.py --meddle``: a client process acting on the soak's ids.

Run by the soak as ``python -m bench.chaos_meddle SPOOL PLAN LOG SEED [--statusd
URL] [--purges] [--hot N]`` (``STATUSD_TOKEN`` in its environment when ``--statusd``
is given).  Until SIGTERM it
does, at random, one of:

* **redrop**: an id seen in ``done/`` or ``failed/`` is submitted again with its
  planned job (``Client.submit``; with ``--statusd``, every other one through
  ``POST /api/v1/tasks`` with the id in the body).  DESIGN sections 2 and 9: the new
  run's record replaces the old one;
* **cancel**: an id seen in ``pending/`` or ``running/`` (``Client.cancel``, waiting
  up to :data:`CANCEL_WAIT_S` for a running job's record);
* **retry**: an id seen in ``failed/`` (``Client.retry``);
* **purge** (with ``--purges``, every :data:`PURGE_EVERY_S` on average):
  ``Client.purge`` of records older than one of :data:`PURGE_OLDER_THAN_S` (seconds,
  drawn at random).

Half the time it picks among the first ``--hot`` planned ids only (default
:data:`HOT_IDS`), so that several meddlers (``--meddlers``) and the processors meet on
the same ids.

Each action is one JSON line in ``LOG``: ``{"a": action, "id": ..., "t0": ns, "t1":
ns, "out": ...}`` with ``CLOCK_MONOTONIC`` times taken before and after it (the
clock of the runs log), so the soak's verdict (``bench/chaos_verdict.py``) knows
which submission of an id came last, which cancels answered ``cancelled``, and
which ids a purge may have removed.  A meddler acts one action at a time; several
meddlers write logs of their own.  Outcomes: ``ok``,
``cancelled:pending`` or ``cancelled:running`` (a cancel's record says so, and which
it cancelled), ``state:<state>/<error type>`` (a cancel's record says otherwise),
``conflict``, ``notfound``, ``error:<type>: <message>``.  SIGTERM only sets a flag:
the action under way ends first.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from spool.client import Client
from spool.errors import ConflictError, NotFoundError
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job, Record
from spool.settings import FsyncMode

CANCEL_WAIT_S = 1.0
PURGE_OLDER_THAN_S = (1.0, 5.0, 20.0, 60.0)
GAP_S = 0.03
"""Mean pause between two actions."""
WEIGHTS = {"redrop": 0.37, "cancel": 0.37, "retry": 0.26}
PURGE_EVERY_S = 3.0
"""Mean time between purges.  Purges are rare, mostly of older records, and made by
the first meddler only (``--purges``), so that many ids stay checkable for loss."""
HTTP_TIMEOUT_S = 10.0
HOT_IDS = 24
HOT_SHARE = 0.5


class Meddler:
    """Random client actions on one spool, each logged as a line of JSON."""

    def __init__(self, root: Path, plan: dict[str, bytes], log: Path, *,
                 rng: random.Random, fsync: FsyncMode, statusd: str | None,
                 purges: bool = True, hot: int = HOT_IDS) -> None:
        self.root = root
        self.plan = plan
        self.rng = rng
        self.statusd = statusd
        self.client = Client(Layout(root), Mover(Layout(root), fsync))
        self.stop = threading.Event()
        self._log = open(log, "ab", buffering=0)  # noqa: SIM115 - closed in run()
        self.hot = set(list(plan)[:hot])
        self.purges = purges
        self._http_turn = False

    def run(self) -> None:
        actions: dict[str, Callable[[], None]] = {
            "redrop": self.redrop, "cancel": self.cancel, "retry": self.retry}
        names, weights = list(WEIGHTS), list(WEIGHTS.values())
        next_purge = time.monotonic() + self.rng.uniform(0, 2 * PURGE_EVERY_S)
        try:
            while not self.stop.is_set():
                if self.purges and time.monotonic() >= next_purge:
                    self.purge()
                    next_purge += self.rng.uniform(0, 2 * PURGE_EVERY_S)
                else:
                    actions[self.rng.choices(names, weights)[0]]()
                time.sleep(self.rng.uniform(0, 2 * GAP_S))
        finally:
            self._log.close()

    def _pick(self, *states: str) -> str | None:
        among = self.hot if self.rng.random() < HOT_SHARE else self.plan
        names = [n[:-5] for s in states for n in os.listdir(self.root / s)
                 if n.endswith(".json") and n[:-5] in among]
        return self.rng.choice(names) if names else None

    def _note(self, action: str, job_id: str | None, t0: int, out: str,
              **more: Any) -> None:
        line = {"a": action, "id": job_id, "t0": t0, "t1": time.monotonic_ns(), "out": out,
                **more}
        self._log.write(orjson.dumps(line) + b"\n")

    def redrop(self) -> None:
        job_id = self._pick("done", "failed")
        if job_id is None:
            return
        t0 = time.monotonic_ns()
        self._http_turn = not self._http_turn
        if self.statusd and self._http_turn:
            self._note("redrop", job_id, t0, self._post(job_id), via="http")
            return
        out = _outcome(lambda: self.client.submit(
            Job.model_validate_json(self.plan[job_id]), job_id))
        self._note("redrop", job_id, t0, out, via="client")

    def _post(self, job_id: str) -> str:
        body = orjson.dumps({**orjson.loads(self.plan[job_id]), "id": job_id})
        request = urllib.request.Request(
            f"{self.statusd}/api/v1/tasks", data=body, method="POST",
            headers={"Authorization": f"Bearer {os.environ['STATUSD_TOKEN']}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return "ok" if response.status == 202 else f"error:http {response.status}"
        except urllib.error.HTTPError as exc:
            return "conflict" if exc.code == 409 else f"error:http {exc.code}"
        except OSError as exc:
            return f"error:{type(exc).__name__}: {exc}"

    def cancel(self) -> None:
        job_id = self._pick("pending", "running") if self.rng.random() < 0.5 \
            else self._pick("running")
        if job_id is None:
            return
        t0 = time.monotonic_ns()
        self._note("cancel", job_id, t0,
                   _outcome(lambda: self.client.cancel(job_id, wait_s=CANCEL_WAIT_S)))

    def retry(self) -> None:
        job_id = self._pick("failed")
        if job_id is None:
            return
        t0 = time.monotonic_ns()
        out = _outcome(lambda: self.client.retry(job_id))
        self._note("retry", job_id, t0, "ok" if out.startswith("state:pending") else out)

    def purge(self) -> None:
        older_than_s = self.rng.choice(PURGE_OLDER_THAN_S)
        t0 = time.monotonic_ns()
        try:
            report = self.client.purge(older_than_s)
        except Exception as exc:  # every failure is a logged outcome
            self._note("purge", None, t0, f"error:{type(exc).__name__}: {exc}",
                       older_than_s=older_than_s)
            return
        self._note("purge", None, t0, "ok", older_than_s=older_than_s,
                   removed=report.removed, kept=report.kept)


def _outcome(action: Callable[[], object]) -> str:
    """What one client call answered, as a log outcome."""
    try:
        result = action()
    except ConflictError:
        return "conflict"
    except NotFoundError:
        return "notfound"
    except Exception as exc:  # every failure is a logged outcome
        return f"error:{type(exc).__name__}: {exc}"
    return _record_outcome(result) if isinstance(result, Record) else "ok"


def _record_outcome(record: Record) -> str:
    """``cancelled:pending|running`` for a failed record that says so, else the state it
    is in (a retried record keeps the error of the run it retries)."""
    error = record.error
    if record.state == "failed" and error is not None and error.type == "cancelled":
        pending = error.message.startswith("cancelled while pending")
        return "cancelled:pending" if pending else "cancelled:running"
    return f"state:{record.state}/{error.type if error is not None else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_meddle",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("spool", type=Path)
    parser.add_argument("plan", type=Path, help="JSON object: id -> planned job")
    parser.add_argument("log", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("--fsync", default="always")
    parser.add_argument("--statusd", help="statusd's base URL (STATUSD_TOKEN set)")
    parser.add_argument("--purges", action="store_true", help="purge now and then too")
    parser.add_argument("--hot", type=int, default=HOT_IDS, help="how many hot ids")
    args = parser.parse_args(argv)
    plan = {k: orjson.dumps(v) for k, v in orjson.loads(args.plan.read_bytes()).items()}
    meddler = Meddler(args.spool, plan, args.log, rng=random.Random(args.seed),
                      fsync=FsyncMode(args.fsync), statusd=args.statusd,
                      purges=args.purges, hot=args.hot)
    signal.signal(signal.SIGTERM, lambda *_: meddler.stop.set())
    meddler.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
