"""The chaos soak with every writer at once, short: two processors, SIGKILLs and
SIGTERMs, and a meddler re-dropping, cancelling, retrying and purging (half its
re-drops through statusd's POST).

The longer runs are ``python -m bench.chaos --processors 2 --meddle ...``; their
figures are in docs/reliability.md, section 1.  The verdict's own rules (what a
purge excuses, which cancel must stand) are checked on made-up logs below.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.chaos import SoakConfig, render, run_soak
from bench.chaos_ledger import Run
from bench.chaos_readers import SpoolReader
from bench.chaos_verdict import cancel_stands, ended, may_be_purged, timelines
from bench.chaos_writers import Writers
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from statusd.listening import said

S = 1_000_000_000


def test_two_processors_and_a_meddler_nothing_lost_nothing_run_twice(tmp_path: Path) -> None:
    cfg = SoakConfig(jobs=300, kills=10, seed=5, fsync="never", max_gap_s=1.5,
                     drain_timeout_s=120, workdir=tmp_path, processors=2,
                     sigterm_share=0.5, meddle=True, statusd=True)
    report = run_soak(cfg)
    shown = render(cfg, report)
    assert report.kills + report.sigterms == 10, shown
    assert report.sigterms >= 1, shown
    for problem in ("lost", "run_twice_at_once", "in_two_folders", "wrong_outcome",
                    "cancel_not_kept", "left_behind", "stray_processes"):
        assert getattr(report, problem) == 0, f"{problem}: {shown}"
    assert report.bad_term_exits == [], shown
    assert report.final_exit_status == 0, shown
    assert report.torn_records == 0 and report.records_read > 0, shown
    for did in ("redrop ok", "redrop/http ok", "retry ok", "purge ok"):
        assert report.meddled.get(did, 0) > 0, f"the meddler never did {did!r}: {shown}"
    assert report.meddled.get("cancel cancelled:pending", 0) > 0, shown
    assert report.meddled.get("cancel cancelled:running", 0) > 0, shown


def test_the_soaks_statusd_gets_a_port_no_one_can_take_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The soak picked a free port (bound as 0 and let go) and statusd bound it only
    after its start-up: any other process could take it meanwhile (an xdist worker's
    server, an outgoing connection) and the soak failed, "statusd did not start".  Here
    a port this process bound as 0 is taken the moment it is let go."""
    bind, close = socket.socket.bind, socket.socket.close
    asked_0: set[int] = set()
    held: list[socket.socket] = []

    def squatting_bind(self: socket.socket, address: Any) -> None:
        bind(self, address)
        if isinstance(address, tuple) and address[1] == 0:
            asked_0.add(id(self))

    def squatting_close(self: socket.socket) -> None:
        freed = self.getsockname() if id(self) in asked_0 else None
        asked_0.discard(id(self))
        close(self)
        if freed is not None:
            squatter = socket.socket()
            bind(squatter, freed)
            squatter.listen()
            held.append(squatter)

    root = tmp_path / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    (tmp_path / "logs").mkdir()
    writers = Writers(tmp_path, root, lambda: {**os.environ, "SPOOL_DIR": str(root),
                                              "SPOOL_FSYNC": "never"})
    monkeypatch.setattr(socket.socket, "bind", squatting_bind)
    monkeypatch.setattr(socket.socket, "close", squatting_close)
    try:
        writers.start([], 1, "never", meddlers=0, statusd=True, hot=0)
        found = said((tmp_path / "logs" / "statusd.log").read_text(), "127.0.0.1")
        assert found is not None
        with urllib.request.urlopen(f"{found.url}/healthz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        monkeypatch.undo()
        writers.stop()
        for squatter in held:
            squatter.close()


def _log(tmp_path: Path, *actions: dict[str, object]) -> list[Path]:
    """The actions split between two meddlers' logs, as two meddlers would write them."""
    logs = [tmp_path / "meddle-0.log", tmp_path / "meddle-1.log"]
    for n, log in enumerate(logs):
        log.write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in actions[n::2]))
    return logs


def test_a_purge_excuses_an_absent_id_only_if_it_began_after_the_last_submission(
        tmp_path: Path) -> None:
    logs = _log(tmp_path,
               {"a": "purge", "id": None, "t0": 5 * S, "t1": 6 * S, "out": "ok",
                "older_than_s": 1.0},
               {"a": "redrop", "id": "x", "t0": 10 * S, "t1": 10 * S, "out": "ok"},
               {"a": "retry", "id": "y", "t0": 10 * S, "t1": 10 * S, "out": "conflict"},
               {"a": "purge", "id": None, "t0": 12 * S, "t1": 13 * S, "out": "ok",
                "older_than_s": 5.0})
    meddle = timelines({"x": 1 * S, "y": 1 * S, "z": 8 * S}, logs)
    assert meddle.timelines["x"].last_submit_ns == 10 * S
    assert meddle.timelines["y"].last_submit_ns == 1 * S  # a refused retry submits nothing
    # x re-dropped at 10 s: the purge at 12 s cut at 7 s, and the one at 5 s came first
    assert not may_be_purged(meddle.timelines["x"], meddle.purges)
    assert may_be_purged(meddle.timelines["y"], meddle.purges)
    assert not may_be_purged(meddle.timelines["z"], meddle.purges)  # cutoff 7 s < 8 s
    # and only once a run of its last submission began: a purge takes records only
    assert not ended(meddle.timelines["y"], [Run("y", "t", 1, 2, 3, S // 2, True, S)])
    assert ended(meddle.timelines["y"], [Run("y", "t", 1, 2, 3, 2 * S, True, 3 * S)])


def test_a_cancel_that_answered_cancelled_stands_unless_an_earlier_run_was_alive(
        tmp_path: Path) -> None:
    logs = _log(tmp_path,
               {"a": "cancel", "id": "p", "t0": 4 * S, "t1": 5 * S, "out": "cancelled:pending"},
               {"a": "cancel", "id": "r", "t0": 4 * S, "t1": 5 * S, "out": "cancelled:running"},
               {"a": "cancel", "id": "q", "t0": 4 * S, "t1": 5 * S, "out": "cancelled:pending"},
               {"a": "retry", "id": "q", "t0": 6 * S, "t1": 6 * S, "out": "ok"},
               {"a": "cancel", "id": "o", "t0": 4 * S, "t1": 5 * S, "out": "cancelled:pending"},
               {"a": "redrop", "id": "o", "t0": 3 * S, "t1": 4 * S + 1, "out": "ok"})
    lines = timelines({"p": 1 * S, "r": 1 * S, "q": 1 * S, "o": 1 * S}, logs).timelines
    alive = [Run("p", "t", 1, 2, 3, 3 * S, True, end_ns=7 * S)]
    over = [Run("p", "t", 1, 2, 3, 1 * S, True, end_ns=2 * S)]
    assert cancel_stands(lines["p"], over)
    # a run of the id alive during the cancel of its re-drop may finish after it
    assert not cancel_stands(lines["p"], alive)
    # a running job's cancel: the run alive is the one it cancelled
    assert cancel_stands(lines["r"], [Run("r", "t", 1, 2, 3, 3 * S, True)])
    assert not cancel_stands(lines["q"], [])  # retried after the cancel
    # another meddler's re-drop ended after the cancel began: it may have come after
    assert not cancel_stands(lines["o"], [])
    assert lines["o"].cancelled_after()


def test_the_reader_counts_a_torn_file_and_a_record_in_the_wrong_place(tmp_path: Path) -> None:
    for folder in ("pending", "done", "failed"):
        (tmp_path / folder).mkdir()
    (tmp_path / "pending" / "a.json").write_bytes(b'{"tool": "echo"')  # half written
    (tmp_path / "done" / "b.json").write_bytes(b'{"id": "b", "state": "done"}')
    (tmp_path / "done" / "c.json").write_bytes(b'{"id": "c", "state": "failed"}')
    reader = SpoolReader(tmp_path, seed=1)
    reader.check("pending", "a.json")
    reader.check("done", "b.json")
    reader.check("done", "c.json")
    reader.check("failed", "gone.json")  # moved on between the listing and the read
    assert reader.reads == 3
    assert [t.split(":")[0] for t in reader.torn] == ["pending/a.json", "done/c.json"]
