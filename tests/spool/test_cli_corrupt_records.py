"""A corrupt file in ``done/`` or ``failed/`` is reported as unreadable, never as a
clean done with a null result: by the CLI (``show``, ``ls``, ``wait``), by the
read side, and by statusd's REST.

The files are what a disk error, a full disk under a careless copy or a hand edit
leave: truncated JSON, bytes that are not UTF-8, text that is not JSON, and a
valid record of another job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from spoolkit import Proc, run_all, spoolq

from spool.layout import Layout
from spool.reader import SpoolReader
from spool.states import JobState

CORRUPT: dict[str, tuple[JobState, bytes]] = {
    "truncated": (JobState.DONE, b'{"id": "truncated", "state": "done", "result": {"a": [1, 2'),
    "not-utf8": (JobState.DONE, b'{"id": "not-utf8", "state": "done", "result": "\xff\xfe"}'),
    "not-json": (JobState.FAILED, b"disk error\n"),
    "empty": (JobState.DONE, b""),
    "other-id": (JobState.DONE, b'{"id": "someone-else", "state": "done", "result": 1}'),
}


@pytest.fixture
def corrupt(root: Path) -> Path:
    layout = Layout(root)
    for job_id, (state, raw) in CORRUPT.items():
        layout.job(state, job_id).write_bytes(raw)
    return root


def _error_line(proc: Proc, job_id: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"spoolq: error: job {job_id} is "), proc.stderr
    assert "cannot be read" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr and "a bug in spoolq" not in proc.stderr
    return lines[-1]


@pytest.mark.parametrize("job_id", sorted(CORRUPT))
def test_show_and_wait_exit_1_naming_the_unreadable_record(env: dict[str, str], corrupt: Path,
                                                           job_id: str) -> None:
    state = CORRUPT[job_id][0]
    shown, waited, text = run_all(env, ["show", job_id, "--json"],
                                  ["wait", job_id, "--json", "--timeout", "5"],
                                  ["show", job_id])
    for proc in (shown, waited, text):
        assert proc.returncode == 1, (proc.args, proc.returncode, proc.stderr)
        _error_line(proc, job_id)
    for proc in (shown, waited):
        record: dict[str, Any] = orjson.loads(proc.stdout)
        assert record["id"] == job_id and record["state"] == state.value
        assert f"{state.value}/{job_id}.json" in record["unreadable"]
        assert "result" not in record and "error" not in record
    assert "result" not in text.stdout and "unreadable  " in text.stdout


def test_ls_marks_unreadable_records_and_still_lists(env: dict[str, str], corrupt: Path) -> None:
    listed, table = run_all(env, ["ls", "--json"], ["ls"])
    assert listed.returncode == 0, listed.stderr
    tasks = {t["id"]: t for t in orjson.loads(listed.stdout)["tasks"]}
    assert set(tasks) == set(CORRUPT)
    for job_id, (state, _) in CORRUPT.items():
        assert tasks[job_id]["state"] == state.value and tasks[job_id]["unreadable"]
        assert "result" not in tasks[job_id]
    assert table.returncode == 0, table.stderr
    rows = table.stdout.strip().splitlines()[1:]
    assert len(rows) == len(CORRUPT) and all(r.endswith("unreadable record") for r in rows)
    assert f"{len(CORRUPT)} record(s) on this page cannot be read" in table.stderr


def test_wait_of_a_readable_done_job_still_exits_0(env: dict[str, str], corrupt: Path) -> None:
    layout = Layout(Path(env["SPOOL_DIR"]))
    layout.job(JobState.DONE, "fine").write_bytes(
        b'{"id": "fine", "state": "done", "submitted_at": "2026-01-01T00:00:00Z", "result": null}')
    proc = spoolq(env, "wait", "fine", "--json")
    assert proc.returncode == 0, proc.stderr
    record = orjson.loads(proc.stdout)
    assert record["result"] is None and "unreadable" not in record


def test_the_read_side_says_unreadable_in_the_folders_state(corrupt: Path) -> None:
    reader = SpoolReader(Layout(corrupt))
    for job_id, (state, _) in CORRUPT.items():
        record = reader.get(job_id)
        assert record.state is state and record.unreadable is not None
        assert record.result is None and record.error is None
    page = reader.page()
    assert {r.id for r in page.records if r.unreadable} == set(CORRUPT)
    assert reader.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 1}


# Timestamps a datetime parses but no reader can use: no offset (cannot be compared with
# the others'), or past year 9999 once in UTC.
ODD_TIMES = {"naive": "2026-11-30T01:00:00", "overflow": "9999-12-31T23:59:59-01:00"}


def test_odd_timestamps_in_records_and_progress_are_no_crash(env: dict[str, str],
                                                            root: Path) -> None:
    """A record's ``started_at``/``finished_at`` and a progress file's times are checked as
    a job's are: a progress file with such a time is no progress, such a record is
    unreadable.  ``ls`` crashed with a TypeError, ``show`` and ``wait`` with an
    OverflowError ("a bug in spoolq")."""
    layout = Layout(root)
    for kind, ts in ODD_TIMES.items():
        layout.job(JobState.RUNNING, f"run-{kind}").write_bytes(
            b'{"tool": "echo", "submitted_at": "2026-11-30T00:00:00Z"}')
        layout.progress_file(f"run-{kind}").write_bytes(orjson.dumps(
            {"fraction": 0.5, "message": "half", "updated_at": ts, "started_at": ts}))
        for field in ("started_at", "finished_at"):
            job_id = f"done-{field}-{kind}"
            layout.job(JobState.DONE, job_id).write_bytes(orjson.dumps(
                {"id": job_id, "state": "done", "tool": "echo", "result": 1,
                 "submitted_at": "2026-11-30T00:00:00Z", field: ts}))
    # Eleven read-only commands on a spool nothing changes: run side by side.
    unreadable = [(field, f"done-{field}-{kind}") for kind in ODD_TIMES
                  for field in ("started_at", "finished_at")]
    listed, *procs = run_all(
        env, ["ls", "--limit", "50"],
        *(["show", f"run-{kind}", "--json"] for kind in ODD_TIMES),
        *(cmd for _, job_id in unreadable
          for cmd in (["show", job_id], ["wait", job_id, "--timeout", "5"])))
    assert listed.returncode == 0, listed.stderr
    assert "a bug in spoolq" not in listed.stderr
    for shown in procs[:len(ODD_TIMES)]:
        assert shown.returncode == 0, shown.stderr
        record = orjson.loads(shown.stdout)
        assert record["state"] == "running" and "progress" not in record, record
        assert record["started_at"].endswith("Z"), record
    for n, (field, job_id) in enumerate(unreadable):
        for proc in procs[len(ODD_TIMES) + 2 * n:len(ODD_TIMES) + 2 * n + 2]:
            assert proc.returncode == 1, (proc.args, proc.stderr)
            assert f"{field}:" in _error_line(proc, job_id)


DEEP = b'{"tool": "echo", "params": {"x": ' + b"[" * 500 + b"]" * 500 + b"}}"
DEEP_RECORD = (b'{"id": "deep-done", "state": "done", "submitted_at": "2026-01-01T00:00:00Z", '
               b'"result": ' + b"[" * 500 + b"]" * 500 + b"}")


def test_files_nested_past_what_orjson_writes_are_no_crash(env: dict[str, str],
                                                            root: Path) -> None:
    """orjson reads 1,024 levels but writes 254: a drop nested 500 deep (which intake
    quarantines, and which waits in pending/ while its id runs), the same in running/, and
    such a record made ls, show and wait "a bug in spoolq" (TypeError)."""
    layout = Layout(root)
    layout.job(JobState.PENDING, "deep-pending").write_bytes(DEEP)
    layout.job(JobState.RUNNING, "deep-running").write_bytes(DEEP)
    layout.job(JobState.DONE, "deep-done").write_bytes(DEEP_RECORD)
    listed, *shown, done_shown, done_waited = run_all(
        env, ["ls", "--json"], ["show", "deep-pending"], ["show", "deep-running"],
        ["show", "deep-done"], ["wait", "deep-done"])
    assert listed.returncode == 0, listed.stderr
    tasks = {t["id"]: t for t in orjson.loads(listed.stdout)["tasks"]}
    assert tasks["deep-pending"]["state"] == "pending" and tasks["deep-pending"]["params"] == {}
    assert tasks["deep-running"]["state"] == "running" and "result" not in tasks["deep-done"]
    assert "nested more than" in tasks["deep-done"]["unreadable"]
    for proc in shown:
        assert proc.returncode == 0, proc.stderr
    for proc in (done_shown, done_waited):
        assert proc.returncode == 1, (proc.args, proc.stderr)
        assert "nested more than" in _error_line(proc, "deep-done")


def test_wait_for_several_never_shows_an_unreadable_record_as_clean(
        env: dict[str, str], corrupt: Path) -> None:
    """``wait A B`` printed "truncated done" with nothing on stderr and exit 1, no reason
    given: a script reading the lines took a corrupt record for a success (QA).  As for
    one job, the line says so and stderr has the error."""
    layout = Layout(corrupt)
    layout.job(JobState.DONE, "fine").write_bytes(
        b'{"id": "fine", "state": "done", "submitted_at": "2026-01-01T00:00:00Z", "result": 1}')
    text, lines = run_all(env, ["wait", "truncated", "fine"],
                          ["wait", "truncated", "fine", "--json"])
    assert text.returncode == lines.returncode == 1, text.stderr
    first, second = text.stdout.splitlines()
    assert first.startswith("truncated done unreadable record: done/truncated.json"), first
    assert second == "fine done"
    _error_line(text, "truncated")
    records = [orjson.loads(line) for line in lines.stdout.splitlines()]
    assert "done/truncated.json" in records[0]["unreadable"] and "unreadable" not in records[1]
