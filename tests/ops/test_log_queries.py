"""The journal queries of docs/operations.md ("Logs"), run on a real processor's log.

The guide's ``sh`` block is read from the guide itself, so what is tested is
what an operator copies.  ``journalctl -u spool-processor -o cat ...`` is
replaced by ``cat`` of what the processor wrote on stderr (journald keeps the
lines as they are, and ``-o cat`` gives them back); the rest of each pipeline
runs as written, through jq, sort and head.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import unitkit
from unitkit import load

GUIDE = unitkit.REPO / "docs" / "operations.md"
JOBS = {"hello": {"tool": "echo", "params": {"message": "hi"}},
        "nap": {"tool": "sleep", "params": {"seconds": 0.3}},
        "late": {"tool": "sleep", "params": {"seconds": 30}, "timeout": 0.2},
        "nodata": {"tool": "get_kline", "params": {"symbol": "NOPE"}}}

pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")


def documented_queries() -> dict[str, str]:
    """The Logs section's pipelines by their first comment line, continuations joined."""
    section = GUIDE.read_text().split("\n## Logs\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "no sh block in the Logs section"
    queries: dict[str, str] = {}
    comment, continued = "", False
    for line in block.group(1).splitlines():
        if line.startswith("#"):
            comment, continued = (comment if continued else line), True
        elif line.startswith(" ") and queries.get(comment, "").endswith("\\"):
            queries[comment] = queries[comment][:-1].rstrip() + " " + line.strip()
        elif line.strip():
            queries[comment], continued = line.strip(), False
    return queries


def on_log(query: str, log: Path) -> str:
    """``query`` with its journalctl command replaced by ``cat LOG``."""
    head, _, rest = query.partition("|")
    assert head.startswith("journalctl -u spool-processor") and " -o cat" in head, query
    return f"cat {log} |{rest}"


def finished(root: Path, job_id: str) -> bool:
    return any((root / state / f"{job_id}.json").exists() for state in ("done", "failed"))


@pytest.fixture(scope="module")
def processor_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a processor started as its unit starts it wrote while it ran JOBS."""
    tmp = tmp_path_factory.mktemp("logs")
    root, log = tmp / "spool", tmp / "processor.log"
    subprocess.run(["spoolq", "init", "--spool-dir", str(root)], check=True,
                   capture_output=True)
    for job_id, job in JOBS.items():
        (root / "tmp" / job_id).write_bytes(orjson.dumps(job))
        os.rename(root / "tmp" / job_id, root / "pending" / f"{job_id}.json")
    unit = load("spool-processor.service")
    # SPOOL_FSYNCC, misspelt: the processor warns of it, a line for the warnings query.
    env = unitkit.unit_env(unit, SPOOL_DIR=str(root), SPOOL_FSYNC="never", JOB_NUM="1",
                           SPOOL_FSYNCC="never")
    with open(log, "wb") as out:
        proc = subprocess.Popen(unitkit.exec_argv(unit, env), env=env, stdout=out,
                                stderr=out, cwd="/")
    try:
        deadline = time.monotonic() + 60
        while not all(finished(root, j) for j in JOBS) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(60)
    assert status == 0 and all(finished(root, j) for j in JOBS), log.read_text()
    # A FAST job done in 9 us, as the processor logs it: orjson writes such a float
    # in exponent form, and jq passes that on (echo takes about 0.1 ms here).
    with open(log, "ab") as out:
        out.write(orjson.dumps({
            "ts": "2026-11-30T00:00:00.000Z", "level": "info", "logger": "spoolq.transitions",
            "msg": "done", "event": "done", "id": "quick", "tool": "echo", "attempt": 1,
            "duration_s": 9e-06}) + b"\n")
    return log


def run(query: str) -> str:
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", query], capture_output=True,
                          text=True, check=False, timeout=30)
    assert proc.returncode == 0 and not proc.stderr, (query, proc.stderr)
    return proc.stdout


def query(comment_part: str) -> str:
    found = [q for c, q in documented_queries().items() if comment_part in c]
    assert len(found) == 1, (comment_part, documented_queries())
    return found[0]


def test_the_guide_has_the_five_queries() -> None:
    assert len(documented_queries()) == 5, documented_queries()


def test_one_job_query_finds_its_claim_and_its_outcome(processor_log: Path) -> None:
    out = run(on_log(query("everything about one job"), processor_log).replace(
        '"ID"', '"late"'))
    events = [orjson.loads(line)["event"] for line in out.splitlines()]
    assert events == ["claimed", "failed"], out


def test_failures_by_error_type(processor_log: Path) -> None:
    out = run(on_log(query("failures today"), processor_log))
    counts = dict(reversed(line.split()) for line in out.splitlines())
    assert counts == {"timeout": "1", "invalid_params": "1"}, out


def test_the_slowest_jobs_come_first_whatever_the_duration_looks_like(
        processor_log: Path) -> None:
    out = run(on_log(query("the ten slowest"), processor_log))
    rows = [line.split("\t") for line in out.splitlines()]
    assert {r[1] for r in rows} == {"hello", "nap", "quick"}, out
    assert rows[0][1] == "nap", out
    durations = [float(r[0]) for r in rows]
    assert durations == sorted(durations, reverse=True), out


def test_follow_and_warning_queries_run(processor_log: Path) -> None:
    out = run(on_log(query("follow transitions"), processor_log))
    assert {orjson.loads(line)["id"] for line in out.splitlines()} == {*JOBS, "quick"}
    out = run(on_log(query("warnings and errors"), processor_log))
    # Every warning and error line of the log, and only those: "all lines are warnings"
    # alone held for a query that found nothing (a misspelt level).
    want = []
    for line in processor_log.read_text().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("level") in ("warning", "error"):
            want.append(event)
    assert want, "the run this log is of logged no warning: nothing to find"
    assert [orjson.loads(line) for line in out.splitlines()] == want, out
