"""Every kept entry (``.<name>.kept-<id>``: another user's directory spoolq renamed within
its folder) has its record ``failed/<id>.json``: the only thing that accounts for it, as
every pass and reader ignores the kept name.

A process killed between the rename and the record left the entry with none for good:
recovery now writes it (once; a second pass changes nothing).  ``spoolq purge`` removed
such a record like any other, leaving the entry unaccounted for: it now keeps it while
the entry is there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from spoolkit import NOBODY, REPO, FakeClock, listing, make_spool, read_json, strace_path, submit

from spool import kept as kept_module
from spool.client import Client
from spool.errors import ErrorType
from spool.ids import invalid_id
from spool.models import ErrorInfo
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _occupy(path: Path, *, foreign: bool = False) -> None:
    """A directory holding a file at ``path`` (``foreign``: nobody's, mode 0755)."""
    path.mkdir()
    (path / "notes.txt").write_text("an operator's notes\n")
    if foreign:
        assert NOBODY is not None
        for each in (path / "notes.txt", path):
            os.chown(each, *NOBODY)


def _keep_without_record(spool: Spool, path: Path) -> Path:
    """Rename ``path`` as :meth:`Spool.keep_in_place` does, and write no record: as a
    process killed between the two leaves it."""
    kept = Path(spool.layout.kept_str(str(path), invalid_id(spool.clock.now())))
    os.rename(path, kept)
    return kept


def _record_of(spool: Spool, kept: Path) -> dict[str, Any]:
    record_id = kept.name.rpartition(".kept-")[2]
    return read_json(spool.layout.job(F, record_id))


@pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None or shutil.which("setpriv") is None,
                    reason="needs root (to make another user's directory) and setpriv")
def test_a_cancel_killed_between_keeping_a_directory_and_its_record_is_recorded(
        tmp_path: Path, env: dict[str, str]) -> None:
    """A real ``spoolq cancel`` of a running job, as the spool user (no CAP_DAC_OVERRIDE),
    with another user's directory at cancel/v: it keeps the directory in cancel/, and is
    SIGKILLed by strace on its fsync of cancel/ right after that rename, before its record.
    Before, no pass ever wrote that record (every pass leaves kept names alone)."""
    strace = strace_path()
    if strace is None:
        pytest.skip("needs strace, allowed to trace")
    root = Path(env["SPOOL_DIR"])
    # The id's time is the cancel's: a minute later it is past the writer's grace.
    spool = make_spool(root, FsyncMode.ALWAYS,
                       clock=FakeClock(datetime.now(UTC) + timedelta(minutes=1)))
    submit(spool, "v")
    os.rename(spool.layout.job(P, "v"), spool.layout.job(R, "v"))
    _occupy(spool.layout.cancel / "v", foreign=True)
    proc = subprocess.run(
        [*NO_DAC, strace, "-f", "-qq", "-o", os.devnull, "-P", str(spool.layout.cancel),
         "-e", "trace=openat", "-e", "inject=openat:signal=SIGKILL:when=1",
         sys.executable, "-m", "spool.cli.main", "cancel", "v", "--timeout", "0.1"],
        env={**env, "SPOOL_FSYNC": "always"}, cwd=REPO, capture_output=True, text=True,
        check=False, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    [name] = listing(spool.layout.cancel)
    kept = spool.layout.cancel / name
    assert name.startswith(".v.kept-invalid-") and listing(spool.layout.folder(F)) == []

    report = Recovery(spool).scan()

    record = _record_of(spool, kept)
    assert record["id"] in report.restored
    assert record["error"]["type"] == "invalid_job" and "operator" in record["error"]["message"]
    assert record["source"] == {"name": "cancel/v", "kind": "directory",
                                "kept_at": f"cancel/{name}"}
    assert (kept / "notes.txt").read_text() == "an operator's notes\n"
    written = spool.layout.job(F, record["id"]).read_bytes()
    assert record["id"] not in Recovery(spool).scan().restored  # idempotent
    assert spool.layout.job(F, record["id"]).read_bytes() == written


def test_the_first_pass_records_kept_entries_without_records_in_every_folder(
        spool: Spool, clock: FakeClock) -> None:
    """Every folder spoolq keeps an entry in: its record is written, under the id its name
    carries, saying where it stood and where it is; the entry is left alone."""
    layout = spool.layout
    places = [layout.job(P, "p"), layout.job(R, "r"), layout.job(D, "d"), layout.original("f"),
              layout.progress_file("g"), layout.cancel_request("c")]
    kept = {}
    for place in places:
        _occupy(place)
        kept[place] = _keep_without_record(spool, place)
    # Not ours: no id spoolq gives, or a record already there.
    (layout.folder(D) / ".x.json.kept-mine").mkdir()
    _occupy(layout.folder(D) / "w.json")
    assert spool.keep_in_place(str(layout.folder(D) / "w.json"), name="done/w.json",
                               message="kept")
    before = {name: layout.job(F, name.removesuffix(".json")).read_bytes()
              for name in listing(layout.folder(F)) if name.endswith(".json")}
    clock.advance(kept_module.KEPT_GRACE_S)

    report = Recovery(spool).scan()

    for place, entry in kept.items():
        record = _record_of(spool, entry)
        where = f"{place.parent.name}/{place.name}"
        assert record["source"] == {"name": where, "kind": "directory",
                                    "kept_at": f"{place.parent.name}/{entry.name}"}
        assert record["error"]["type"] == "invalid_job" and record["state"] == "failed"
        assert "operator must remove it" in record["error"]["message"]
        assert (entry / "notes.txt").read_text() == "an operator's notes\n"
        assert record["id"] in report.restored
    assert len(listing(layout.folder(F))) == len(before) + len(kept) + 1  # + failed/'s kept
    for name, data in before.items():
        assert layout.job(F, name.removesuffix(".json")).read_bytes() == data
    again = Recovery(spool).scan()
    assert again.restored == [] and not again.changed


def test_a_kept_entry_is_left_to_its_writer_then_recorded_by_a_later_pass(
        spool: Spool, clock: FakeClock) -> None:
    """A kept entry without a record, younger than the grace (by its id's time): its writer
    may be writing the record.  A later, periodic pass records it, even in done/, which
    periodic passes do not list; and the periodic passes find new ones in cancel/ and
    failed/."""
    layout = spool.layout
    recovery = Recovery(spool)
    _occupy(layout.job(D, "d"))
    young = _keep_without_record(spool, layout.job(D, "d"))
    assert recovery.scan().restored == []
    assert not os.path.lexists(layout.job(F, young.name.rpartition(".kept-")[2]))
    clock.advance(kept_module.KEPT_GRACE_S)
    for place in (layout.cancel_request("c"), layout.original("f")):
        _occupy(place)
    later = [_keep_without_record(spool, layout.cancel_request("c")),
             _keep_without_record(spool, layout.original("f"))]
    clock.advance(kept_module.KEPT_GRACE_S)

    report = recovery.scan()

    for entry in (young, *later):
        assert _record_of(spool, entry)["id"] in report.restored
    assert len(report.restored) == 3
    assert recovery.scan().restored == []


def test_purge_keeps_the_record_of_a_kept_entry_still_there(tmp_path: Path) -> None:
    """``spoolq purge`` removed a kept entry's record like any other old record, and the
    entry, which every pass ignores, was accounted for by nothing.  Now the record stays
    (counted as kept, its ``kept_at`` in the report) until an operator removes the entry;
    then it goes as any other."""
    clock = FakeClock(datetime.now(UTC) + timedelta(hours=1))
    spool = make_spool(tmp_path / "spool", clock=clock)
    layout = spool.layout
    _occupy(layout.job(D, "w"))
    assert spool.keep_in_place(str(layout.job(D, "w")), name="done/w.json", message="kept")
    [kept_name] = [n for n in listing(layout.folder(D)) if n.startswith(".")]
    record_id = kept_name.rpartition(".kept-")[2]
    submit(spool, "plain")
    claim = spool.claim("plain")
    assert claim is not None
    record = spool.record_of_claim(claim, F)
    record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message="the tool failed")
    spool.fail(claim, record)
    client = Client(layout, spool.mover, clock)

    dry = client.purge(60, dry_run=True)
    report = client.purge(60)

    assert listing(layout.folder(F)) == [f"{record_id}.json"]
    assert (dry.removed, dry.kept, dry.held) == (1, 1, (f"done/{kept_name}",))
    assert (report.removed, report.kept, report.held) == (1, 1, (f"done/{kept_name}",))
    shutil.rmtree(layout.folder(D) / kept_name)  # the operator's part
    assert client.purge(60) == type(report)(1, 0)
    assert listing(layout.folder(F)) == []


def test_purge_names_the_entries_that_hold_records(tmp_path: Path) -> None:
    """``spoolq purge`` says which records it kept for entries still there, and where
    they are, in its text and in ``--json``: an operator has to remove them."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    _occupy(layout.job(D, "w"))
    assert spool.keep_in_place(str(layout.job(D, "w")), name="done/w.json", message="kept")
    [kept_name] = [n for n in listing(layout.folder(D)) if n.startswith(".")]
    [record_name] = listing(layout.folder(F))
    hour_ago = datetime.now(UTC).timestamp() - 3600
    os.utime(layout.folder(F) / record_name, (hour_ago, hour_ago))
    env = {**os.environ, "SPOOL_DIR": str(layout.root)}
    cli = [sys.executable, "-m", "spool.cli.main", "purge", "--older-than", "1m"]

    as_json = subprocess.run([*cli, "--json"], env=env, capture_output=True, text=True,
                             timeout=60, check=True)
    as_text = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60,
                             check=True)

    assert orjson.loads(as_json.stdout) == {"removed": 0, "kept": 1, "dry_run": False,
                                            "unreadable": [], "unremoved": [],
                                            "held": [f"done/{kept_name}"]}
    assert "1 of them stay while what they record is there" in as_text.stdout
    assert f"  {layout.folder(D) / kept_name}\n" in as_text.stdout
    assert listing(layout.folder(F)) == [record_name]
