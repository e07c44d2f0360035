"""Several processors on one spool (same host, local executors): DESIGN rules still hold.

Each run of a job appends its id to one file with O_APPEND (one write(2)
per line, so lines from many processes never interleave): a job run twice
shows up twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from scalekit import Daemon, alive, drop, locations, record, wait_for

StartDaemon = Callable[..., Daemon]
TOTAL = 300


def _job(i: int, log: Path, seconds: float = 0.0, max_attempts: int = 1) -> dict[str, Any]:
    tool = "d_append_fast" if i % 3 == 0 else "d_append"
    return {"tool": tool, "params": {"path": str(log), "seconds": seconds},
            "max_attempts": max_attempts}


def _runs(log: Path) -> Counter[str]:
    return Counter(log.read_text().split())


def _done(root: Path) -> int:
    return sum(1 for n in os.listdir(root / "done") if n.endswith(".json"))


def test_two_processors_run_every_job_exactly_once(spool_root: Path, daemon: StartDaemon,
                                                   tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    for i in range(TOTAL // 2):  # waiting before either processor is up
        drop(spool_root, f"early{i:03d}", _job(i, log))
    first, second = daemon(wait_ready=False), daemon(wait_ready=False)
    wait_for(first.ready, 30, "the first processor")
    wait_for(second.ready, 30, "the second processor")
    for i in range(TOTAL // 2):  # dropped while both are watching
        drop(spool_root, f"late{i:03d}", _job(i, log))
    wait_for(lambda: _done(spool_root) == TOTAL, 90, "every job done")
    assert first.stop() == 0 and second.stop() == 0

    runs = _runs(log)
    assert len(runs) == TOTAL, "every job ran"
    assert runs.most_common(1)[0][1] == 1, f"a job ran twice: {runs.most_common(3)}"
    where = locations(spool_root)
    assert len(where) == TOTAL and all(states == ["done"] for states in where.values()), \
        {k: v for k, v in where.items() if v != ["done"]}
    assert not os.listdir(spool_root / "running")
    for job_id in where:
        rec = record(spool_root, job_id)
        assert rec is not None and rec["attempts"] == 1 and rec["state"] == "done"
    claims = [sum(e.get("event") == "claimed" for e in d.events()) for d in (first, second)]
    assert sum(claims) == TOTAL, claims
    assert min(claims) > 0, f"both processors took work: {claims}"


def test_a_killed_processor_leaves_its_jobs_to_the_other(spool_root: Path,
                                                         daemon: StartDaemon,
                                                         tmp_path: Path) -> None:
    """SIGKILL one of two processors mid-run: the survivor requeues its orphans, ends all.

    With ``max_attempts`` 1 the orphans would fail ``abandoned`` instead (DESIGN 9).
    """
    log = tmp_path / "runs.log"
    total = 120
    doomed, survivor = daemon(), daemon()
    for i in range(total):
        drop(spool_root, f"j{i:03d}", _job(i, log, seconds=0.02, max_attempts=2))
    wait_for(lambda: _done(spool_root) >= total // 4, 60, "a quarter done")
    doomed.kill()
    wait_for(lambda: _done(spool_root) == total, 90, "every job done by the survivor")
    assert alive(survivor.pid) and survivor.stop() == 0

    runs = _runs(log)
    where = locations(spool_root)
    assert len(where) == total and all(states == ["done"] for states in where.values())
    # The jobs it held when it died: the survivor's recovery found them in running/
    # under a dead lease.  (The killed processor's own log can miss the last claim:
    # SIGKILL may land between a claim's rename and its log line.)
    orphans = {job_id for e in survivor.events() if e.get("msg") == "recovery"
               for job_id in e["requeued"] + e["abandoned"]}
    assert orphans, "SIGKILL mid-run leaves claimed jobs behind"
    again = set()
    for job_id in where:
        rec = record(spool_root, job_id)
        assert rec is not None and rec["state"] == "done"
        assert 1 <= runs[job_id] <= rec["attempts"] <= 2, (job_id, runs[job_id], rec)
        if rec["attempts"] == 2:
            again.add(job_id)
    # Only a job the killed processor held when it died is claimed (and maybe run) again.
    assert again <= orphans, again - orphans


def test_a_killed_processors_worker_stops_with_it(spool_root: Path, daemon: StartDaemon,
                                                   tmp_path: Path) -> None:
    beats = tmp_path / "long.beats"
    doomed = daemon()
    # The run would beat for 60 s: its worker gone within 20 s of the kill stopped with
    # its processor.  (Beats counted 0.3 s after the kill, then 1 s later, grew when
    # the worker was not scheduled until after the first count: not a run going on.)
    drop(spool_root, "long", {"tool": "d_heartbeat", "max_attempts": 2,
                              "params": {"path": str(beats), "seconds": 60}})
    wait_for(lambda: beats.exists() and beats.stat().st_size > 0, 20, "the job running")
    first_pid = int(beats.read_text().split()[1])  # lines are '<id> <pid> <n>'
    daemon()  # the survivor: it will requeue the orphan
    try:
        doomed.kill()
        # Gone, it beats no more: the first run did not go on after its processor died.
        wait_for(lambda: not alive(first_pid), 20, "the first run's worker to be gone")
    finally:
        if alive(first_pid):  # the bug's leftover: stop it here, by its pid
            os.kill(first_pid, signal.SIGKILL)


def _left_until_it_is_back(spool_root: Path, daemon: StartDaemon, lacks: Daemon,
                           log: Path) -> None:
    """With the only processor offering ``d_append`` down, a job of it dropped is left in
    ``pending/`` by ``lacks`` (its catalogues read twice meanwhile), and done once a
    processor offering the tool starts again; both stop cleanly."""
    drop(spool_root, "later", _job(1, log))
    time.sleep(3.0)
    assert record(spool_root, "later") is None, record(spool_root, "later")
    assert (spool_root / "pending" / "later.json").exists()
    again = daemon()
    wait_for(lambda: record(spool_root, "later") is not None, 30, "the later job's record")
    rec = record(spool_root, "later")
    assert rec is not None and rec["state"] == "done", rec
    assert again.stop() == 0 and lacks.stop() == 0


def test_a_tool_only_one_processor_offers_is_left_to_it(spool_root: Path, daemon: StartDaemon,
                                                       tmp_path: Path) -> None:
    """A rolling upgrade: one processor loads ``dask_tools``, the other none.  Its jobs
    (accepted by ``spoolq submit``, which checks the processors' catalogues merged) are
    left in ``pending/`` by the one that does not know the tool, for the one that does;
    taken by whichever claimed first, 12 of 20 failed ``unknown_tool`` though a live
    processor offered their tool (h394).  The one that offers it restarting, they wait for
    it (failed at once, each such job was lost to a ``systemctl restart``: h398); that no
    job waits for ever once none offers it is test_elsewhere's."""
    log = tmp_path / "runs.log"
    knows, lacks = daemon(), daemon(SPOOL_TOOLS="")
    total = 40
    for i in range(total):
        drop(spool_root, f"j{i:03d}", _job(i, log))
    def finished() -> list[str]:
        return [n for state in ("done", "failed") for n in os.listdir(spool_root / state)
                if n.endswith(".json")]

    wait_for(lambda: len(finished()) == total, 60, "every job finished")
    failed = [n for n in os.listdir(spool_root / "failed") if n.endswith(".json")]
    assert not failed, (len(failed), record(spool_root, failed[0][:-5]))
    assert _runs(log) == Counter(f"j{i:03d}" for i in range(total))
    assert not [e for e in lacks.events() if e.get("event") in ("claimed", "failed")]

    assert knows.stop() == 0
    _left_until_it_is_back(spool_root, daemon, lacks, log)


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "spool.cli.main", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=root.parent,
                          env={**os.environ, "SPOOL_DIR": str(root)})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_jobs_left_to_another_processor_say_so(spool_root: Path, daemon: StartDaemon,
                                               tmp_path: Path) -> None:
    """A job the processor that does not load its tool leaves to the one that does was
    shown only "pending" by ``show``, ``stats`` and statusd, looking stuck behind a live
    processor with idle workers (left by the sixty-eighth session).  Its status file
    counts the jobs it leaves by tool, the stats document and ``spoolq stats`` say so,
    and ``spoolq show`` says whose they are."""
    log = tmp_path / "runs.log"
    gate = tmp_path / "gate"
    knows, lacks = daemon(JOB_NUM="1"), daemon(SPOOL_TOOLS="")
    for i in range(3):  # d_append: COMPUTE, one at a time on the only processor offering it
        # The first held until the checks below are done: the others stay pending while
        # the CLI runs.  Not a time: a second or more a call at a load of 2 (2.5 s each,
        # the last was running by its show), and an 8 s run was over before the show at a
        # load of 8 to 12 (h406: s2 running or done, 1 run in 3 alone under two burners).
        job = _job(1, log, seconds=0.5)
        if i == 0:
            job["params"] |= {"seconds": 120.0, "until": str(gate)}
        drop(spool_root, f"s{i}", job)

    def left() -> dict[str, int]:
        stats = orjson.loads(_cli(spool_root, "stats", "--json").stdout)
        pending = stats["counts"]["pending"]
        return stats["left_to_others"] if pending and stats["left_to_others"] == {
            "d_append": pending} else {}

    wait_for(left, 30, "the jobs left to the processor offering d_append counted")
    statuses = {d.pid: d.status()["left_to_others"] for d in (knows, lacks)}
    assert statuses[knows.pid] == {}, "it runs them: it leaves none"
    assert set(statuses[lacks.pid]) == {"d_append"}
    lines = _cli(spool_root, "stats").stdout.splitlines()
    said = [line for line in lines if "of tool 'd_append'" in line]
    assert len(said) == 1, lines
    assert "left to the processors that offer tool 'd_append' (pid " in said[0], said
    assert f"pid {knows.pid} on " in said[0], said
    assert f"pid {lacks.pid} on " in said[0] and "does not load it" in said[0], said

    pending = [n[:-5] for n in os.listdir(spool_root / "pending") if n.endswith(".json")]
    shown = _cli(spool_root, "show", sorted(pending)[-1])
    assert "state       pending" in shown.stdout
    assert "left to the processors that offer tool 'd_append'" in shown.stderr, shown.stderr
    assert f"(pid {knows.pid} on " in shown.stderr, shown.stderr
    assert f"pid {lacks.pid} on " in shown.stderr.split(";")[-1], shown.stderr
    # One held by its not_before was said to be "left to" the one offering its tool
    # alone, as if that one could claim it now (h403).
    later = _job(1, log) | {"not_before": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    drop(spool_root, "later", later)
    shown = _cli(spool_root, "show", "later")
    assert "job later waits: held until " in shown.stderr, shown.stderr
    assert "; then left to the processors that offer tool 'd_append'" in shown.stderr, \
        shown.stderr
    _cli(spool_root, "cancel", "later")

    gate.touch()  # the first job ends, and the others run
    wait_for(lambda: _done(spool_root) == 3, 60, "every job done by the one offering it")
    wait_for(lambda: lacks.status()["left_to_others"] == {}, 10, "none left any more")
    assert knows.stop() == 0 and lacks.stop() == 0
    shown = _cli(spool_root, "stats", "--json")
    assert orjson.loads(shown.stdout)["left_to_others"] == {}


def test_an_orphan_of_a_tool_only_its_dead_processor_offered_keeps_the_tools_attempts(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A rolling upgrade: the processor that loads ``dask_tools`` dies mid-run of a job
    whose tool allows 3 runs; the other one, which does not load the tool, settles the
    orphan.  Its recovery took the limit of a tool it does not know as 1, and failed the
    job ``abandoned`` ("attempt 1 of 1, not retried") where the processor offering the
    tool would have requeued it (h402)."""
    log = tmp_path / "runs.log"
    knows, lacks = daemon(), daemon(SPOOL_TOOLS="")
    drop(spool_root, "long", {"tool": "d_append_retried",
                              "params": {"path": str(log), "seconds": 120}})
    wait_for(lambda: log.exists() and "long" in log.read_text(), 30, "its run started")
    assert (spool_root / "running" / "long.json").exists()
    knows.kill()
    wait_for(lambda: not (spool_root / "running" / "long.json").exists(), 30,
             "the orphan settled by the other processor's recovery")
    assert record(spool_root, "long") is None, record(spool_root, "long")
    job = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
    assert job["attempts"] == 1 and job["error"]["type"] == "abandoned", job
    assert "requeued" in job["error"]["message"], job
    time.sleep(2.0)  # left for the processor that offers the tool (the restart's grace)
    assert record(spool_root, "long") is None and alive(lacks.pid)


def test_a_processor_started_while_the_one_offering_a_tool_is_down_leaves_its_jobs(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """The processor that loads ``dask_tools`` is SIGKILLed and restarts (``Restart=``);
    the other, which does not load them, starts meanwhile.  What it remembered of the
    others' tools was its own since its start: it failed the waiting jobs of the dead
    one's tool ``unknown_tool`` at once (h402: 127 of 825 in a soak).  It recalls the
    dead one's catalogue from the status file the crash left."""
    log = tmp_path / "runs.log"
    knows = daemon()
    knows.abort()  # SIGKILL, and reaped: its status file stays until a recovery removes it
    lacks = daemon(SPOOL_TOOLS="")
    _left_until_it_is_back(spool_root, daemon, lacks, log)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_restart_of_the_one_offering_a_tool_loses_no_job_of_it_met_first_meanwhile(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path, stop: str) -> None:
    """A rolling upgrade: the processor that does not load ``dask_tools`` runs, the one
    that loads them starts, and restarts (a stop, or a SIGKILL whose status file the
    other's recovery removes within a scan) before the other met a job of their tools: it
    read the catalogues only at its start and at such a job, knew nothing of the
    restarting one, and failed every job dropped meanwhile ``unknown_tool`` at once
    (h403: 6 of 6).  It reads them at each heartbeat."""
    log = tmp_path / "runs.log"
    lacks = daemon(SPOOL_TOOLS="")
    knows = daemon()
    time.sleep(2.5)  # heartbeats of both; no job of d_append yet
    if stop == "sigkill":
        knows.abort()
        wait_for(lambda: len(os.listdir(spool_root / "owners")) == 2, 20,
                 "the dead one's files removed by the other's recovery")
    else:
        assert knows.proc is not None
        knows.proc.send_signal(signal.SIGTERM)

        def stopping() -> bool:  # it claims no more (at a load of 2 it claimed m0 first)
            try:
                return bool(knows.status().get("stopping"))
            except (StopIteration, FileNotFoundError):
                return True  # stopped already: its status file removed

        wait_for(stopping, 20, "its stop begun")
    ids = [f"m{i}" for i in range(6)]
    for job_id in ids:
        drop(spool_root, job_id, _job(1, log))
    time.sleep(3.0)  # the catalogues read thrice meanwhile
    assert [record(spool_root, job_id) for job_id in ids] == [None] * 6
    if stop == "sigterm":
        assert knows.stop() == 0
    again = daemon()
    wait_for(lambda: _done(spool_root) == 6, 60, "every job done once it is back")
    assert again.stop() == 0 and lacks.stop() == 0


STARTING = "left while a processor starts that may offer it"


def _starting_with_its_tools_held(spool_root: Path, daemon: StartDaemon, gate: Path,
                                  log: Path, ids: list[str]) -> tuple[Daemon, Daemon]:
    """Jobs of ``dask_tools`` wait; the processor that loads them starts, its tools
    module's import held by ``gate``; the other, which loads none, starts once the first
    holds its lock, meets the jobs and leaves them (said in its log)."""
    for i, job_id in enumerate(ids):
        drop(spool_root, job_id, _job(i, log))
    knows = daemon(wait_ready=False, SPOOL_TOOLS="dask_tools,gated_start_tools",
                   GATED_START=str(gate))
    wait_for(lambda: any(f"-{knows.pid}-" in n and n.endswith(".lock")
                         for n in os.listdir(spool_root / "owners")), 30,
             "the starting processor's lock")
    lacks = daemon(SPOOL_TOOLS="")
    wait_for(lambda: any(STARTING in str(e.get("msg")) for e in lacks.events()), 30,
             "the jobs left while the other starts")
    return knows, lacks


def test_jobs_of_a_processor_still_loading_its_tools_are_left_to_it(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """Both processors started at once (a host's reboot), the one that offers a tool
    slower to load its tools than the other to start: the other, knowing nothing of it
    (its lock was taken after its tools loaded, its catalogue said after that), failed
    the tool's waiting jobs ``unknown_tool`` at once (h402: 6 of 6; the rolling-upgrade
    soak, seed 7: 18 of 825).  A lock with no status file beside it is a processor
    starting, which may offer any tool."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    ids = [f"r{i}" for i in range(6)]
    knows, lacks = _starting_with_its_tools_held(spool_root, daemon, gate, log, ids)
    # Neither refused as a tool the running processor does not offer, nor said to fail
    # unknown_tool at its first claim: the one starting may offer it.
    submitted = _cli(spool_root, "submit", "d_append", "--id", "r6", "-p",
                     f"path={log}").stdout.strip()
    assert submitted == "r6"
    shown = _cli(spool_root, "show", "r1").stderr
    assert "no live processor offers tool 'd_append', but the tools of " in shown, shown
    assert f"pid {knows.pid} on " in shown and "(starting) are not known yet" in shown, shown
    time.sleep(2.0)  # the catalogues read twice more meanwhile
    ids.append("r6")
    assert [record(spool_root, job_id) for job_id in ids] == [None] * 7
    gate.touch()
    wait_for(lambda: _done(spool_root) == 7, 60, "every job done once its tools loaded")
    assert _runs(log) == Counter(ids)
    assert not [e for e in lacks.events() if e.get("event") in ("claimed", "failed")]
    assert knows.stop() == 0 and lacks.stop() == 0


def test_jobs_are_left_for_a_restart_of_a_processor_killed_loading_its_tools(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """The processor that offers a tool is SIGKILLed while it loads its tools (before
    its first status file) and restarts: the other failed its jobs ``unknown_tool``
    (the rolling-upgrade soak, seed 3: 66 and 142 of 825).  Its lock file, left by
    the kill, counts as a processor's start until a recovery removes it, remembered for
    the grace of a restart."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    ids = [f"k{i}" for i in range(6)]
    knows, lacks = _starting_with_its_tools_held(spool_root, daemon, gate, log, ids)
    knows.abort()  # SIGKILL, in its tools' import
    wait_for(lambda: not [n for n in os.listdir(spool_root / "owners")
                          if f"-{knows.pid}-" in n], 20,
             "its lock file removed by the other's recovery")
    time.sleep(2.0)  # the catalogues read twice more since
    assert [record(spool_root, job_id) for job_id in ids] == [None] * 6
    gate.touch()
    again = daemon()
    wait_for(lambda: _done(spool_root) == 6, 60, "every job done once it is back")
    assert _runs(log) == Counter(ids)
    assert again.stop() == 0 and lacks.stop() == 0


def test_one_offering_a_tool_stopped_while_another_loads_its_tools_is_remembered(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A rolling upgrade: the processor that does not load ``dask_tools`` starts, its
    tools slow to import; the one that loads them stops cleanly meanwhile (a restart:
    its files removed).  The first read the others' catalogues only once its tools had
    loaded, knew nothing of the stopped one, and failed the waiting jobs of its tools
    ``unknown_tool`` at once (h414: the rolling-upgrade soak with --processors 3, seed 3,
    46 and 260 of 825).  It reads them as it takes its lock, before its tools load."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    knows = daemon()
    lacks = daemon(wait_ready=False, SPOOL_TOOLS="gated_start_tools",
                   GATED_START=str(gate))
    wait_for(lambda: any(f"-{lacks.pid}-" in n and n.endswith(".lock")
                         for n in os.listdir(spool_root / "owners")), 30,
             "the slow one's lock")
    assert knows.stop() == 0
    ids = [f"u{i}" for i in range(6)]
    for job_id in ids:
        drop(spool_root, job_id, _job(1, log))
    gate.touch()
    wait_for(lacks.ready, 30, "its tools loaded")
    time.sleep(2.0)  # it met the jobs, the catalogues read twice more meanwhile
    assert [record(spool_root, job_id) for job_id in ids] == [None] * 6
    again = daemon()
    wait_for(lambda: _done(spool_root) == 6, 60, "every job done once it is back")
    assert _runs(log) == Counter(ids)
    assert again.stop() == 0 and lacks.stop() == 0


def test_a_processor_started_after_the_one_offering_a_tool_stopped_cleanly_leaves_its_jobs(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A rolling upgrade: the processor that loads ``dask_tools`` stops cleanly (its
    status file removed), and the one that does not load them starts before it is back.
    Nothing on the spool said the tool was offered: ``spoolq submit`` refused its jobs
    and the processor failed them ``unknown_tool`` at once (left by the seventy-first
    session: h414, 3 of 16 two-processor soaks under load, up to 90 of 825).  The tool's
    mark in ``offers/`` keeps them waiting for a restart's grace; a tool no processor
    ever offered still fails at once."""
    log = tmp_path / "runs.log"
    knows = daemon()
    assert knows.stop() == 0
    assert not [n for n in os.listdir(spool_root / "owners")], "its files removed"
    lacks = daemon(SPOOL_TOOLS="")
    submitted = _cli(spool_root, "submit", "d_append", "--id", "back", "-p",
                     f"path={log}").stdout.strip()
    assert submitted == "back"
    shown = _cli(spool_root, "show", "back").stderr
    assert "no live processor offers tool 'd_append', but one did " in shown, shown
    assert "left for its return (a restart)" in shown, shown

    def said() -> list[str]:
        lines = _cli(spool_root, "stats").stdout.splitlines()
        return [line for line in lines if "of tool 'd_append'" in line]

    # Said "left to the processors that offer it" while none did (QA h417).
    wait_for(said, 30, "the job left counted by spoolq stats")
    line = said()[0]
    assert "no live processor offers tool 'd_append', but one did " in line, line
    assert "left for its return (a restart)" in line, line
    assert "left to the processors that offer" not in line, line
    drop(spool_root, "typo", {"tool": "d_appendd", "params": {}})
    wait_for(lambda: record(spool_root, "typo") is not None, 30, "the typo's record")
    typo = record(spool_root, "typo")
    assert typo is not None and typo["error"]["type"] == "unknown_tool", typo
    _left_until_it_is_back(spool_root, daemon, lacks, log)
    assert _runs(log) == Counter(["back", "later"])
