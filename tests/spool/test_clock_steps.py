"""The wall clock stepped (an NTP step, a VM resumed, an admin setting the date) under a
spool: what the spool compares with file times must not lose or fail a job for it.

Steps are simulated, never made: a file's times are set (``os.utime``) to what a clock
that stood elsewhere would have stamped, and the library's clock is a fake one.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spoolkit import (
    FakeClock,
    done_record,
    listing,
    locate,
    make_spool,
    read_json,
    run_to_end,
    submit,
)

from spool.cli.overview import stats_lines
from spool.reader import SpoolReader
from spool.recovery import Recovery
from spool.staged import DEAD_STAGING_AGE_S
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED
HOUR_NS = 3600 * 10**9


def stamped_ahead(path: Path, ns: int = HOUR_NS) -> None:
    """Give ``path`` the times a clock ``ns`` ahead stamped: written before a step back."""
    ahead = time.time_ns() + ns
    os.utime(path, ns=(ahead, ahead))


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_re_drop_killed_mid_run_after_a_step_back_is_not_taken_for_finished(
        spool: Spool, clock: FakeClock, max_attempts: int) -> None:
    """An id that finished, then the clock stepped back an hour, then a drop of it again,
    whose processor was killed mid-run: the earlier run's record is newer by its mtime
    than the new run's claim, and recovery took it for the new run's own record, cut
    short before its running file went. That file was removed, and with it the new drop:
    never run, no record of it, the earlier run's record standing as the id's."""
    layout = spool.layout
    submit(spool, "hourly", params={"run": 1})
    run_to_end(spool, "hourly", result={"run": 1})
    stamped_ahead(layout.job(D, "hourly"))  # written when the clock stood an hour ahead
    clock.step(-3600)
    submit(spool, "hourly", params={"run": 2}, max_attempts=max_attempts)
    claim = spool.claim("hourly")
    assert claim is not None
    claim.close()  # its processor died mid-run: the lease goes with it

    report = Recovery(spool).scan()
    assert report.finished == []
    if max_attempts == 1:
        assert report.abandoned == ["hourly"] and locate(layout, "hourly") == [F]
        record = read_json(layout.job(F, "hourly"))
        assert record["params"] == {"run": 2} and record["error"]["type"] == "abandoned"
    else:
        assert report.requeued == ["hourly"] and locate(layout, "hourly") == [P, D]
        assert read_json(layout.job(P, "hourly"))["params"] == {"run": 2}


def test_a_run_recorded_after_a_step_forward_is_still_finished(spool: Spool) -> None:
    """The other side: a run whose own record is newer than its claim (here by a step
    forward) and whose running file its killed processor left is finished, not rerun."""
    layout = spool.layout
    submit(spool, "once")
    claim = spool.claim("once")
    assert claim is not None
    record = done_record(claim, {"ok": True})
    spool.publish_terminal(record)  # the completion, killed before the running file went
    claim.close()
    stamped_ahead(layout.job(D, "once"))
    done = layout.job(D, "once").read_bytes()

    report = Recovery(spool).scan()
    assert report.finished == ["once"] and locate(layout, "once") == [D]
    assert layout.job(D, "once").read_bytes() == done


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_run_recorded_in_its_claims_tick_is_still_finished(spool: Spool,
                                                             max_attempts: int) -> None:
    """A run recorded in the very tick of the filesystem's clock that stamped its claim
    (a coarse clock: 4 ms here, where a FAST run ends well within one), its running file
    left by its killed processor: its record, which names this submission and attempt,
    is its own.  Taken for none, the run was abandoned over its done record, or run
    again."""
    layout = spool.layout
    submit(spool, "quick", max_attempts=max_attempts)
    claim = spool.claim("quick")
    assert claim is not None
    spool.publish_terminal(done_record(claim, {"ok": True}))  # killed before running/ went
    claim.close()
    tick = os.lstat(layout.job(R, "quick")).st_ctime_ns  # the claim's time, as recovery reads it
    os.utime(layout.job(D, "quick"), ns=(tick, tick))
    done = layout.job(D, "quick").read_bytes()

    report = Recovery(spool).scan()
    assert report.finished == ["quick"] and locate(layout, "quick") == [D], report
    assert report.requeued == [] and report.abandoned == []
    assert layout.job(D, "quick").read_bytes() == done


def test_a_record_that_tells_no_run_in_the_claims_tick_is_not_the_runs(spool: Spool) -> None:
    """A file at the id's record name that tells no run (unreadable as a record: a torn
    write, junk), stamped in the very tick of the orphan's claim, may be the run before
    it: counted as this run's record only when a later tick wrote it.  Counted, the
    running file was removed as a completion cut short, and the job was lost: never run
    again, no record of it."""
    layout = spool.layout
    submit(spool, "torn", max_attempts=3)
    claim = spool.claim("torn")
    assert claim is not None
    claim.close()  # its processor died mid-run
    junk = layout.job(F, "torn")
    junk.write_bytes(b'{"id": "torn", "sta')
    tick = os.lstat(layout.job(R, "torn")).st_ctime_ns
    os.utime(junk, ns=(tick, tick))

    report = Recovery(spool).scan()
    assert report.finished == [] and report.requeued == ["torn"], report
    assert P in locate(layout, "torn")



def test_a_step_forward_past_a_day_removes_no_staging_file_in_use(tmp_path: Path) -> None:
    """A client's drop staged in ``tmp/`` and a live writer's staging file, when the wall
    clock steps a day forward (a VM resumed, NTP correcting a clock that booted days
    behind): by its ctime each was a day old, and the processor's next pass removed it
    under its writer (the client's rename into ``pending/`` then failed, its job gone).
    A day of the processor's own time later they are removed as before."""
    clock = FakeClock(datetime.now(UTC))
    spool = make_spool(tmp_path / "spool", clock=clock)
    layout = spool.layout
    upload = layout.tmp / "upload.json"
    upload.write_bytes(b'{"tool": "echo", "params"')  # a client still writing it
    mine = layout.staging("record-x")  # this live process's write in progress
    mine.write_bytes(b"{")
    staged = sorted([upload.name, mine.name])
    recovery = Recovery(spool)
    recovery.scan()
    assert listing(layout.tmp) == staged

    clock.step(DEAD_STAGING_AGE_S + 3600)
    clock.advance(5)  # the next pass
    recovery.scan()
    assert listing(layout.tmp) == staged

    clock.advance(DEAD_STAGING_AGE_S)  # left a day as they were: dead
    report = recovery.scan()
    assert report.removed == 2 and listing(layout.tmp) == []


def test_a_step_back_keeps_a_dead_staging_file_no_longer(tmp_path: Path) -> None:
    """The other way: a file a pass saw young is removed a day of the processor's time
    after it last changed, however far the wall clock stepped back meanwhile."""
    clock = FakeClock(datetime.now(UTC))
    spool = make_spool(tmp_path / "spool", clock=clock)
    layout = spool.layout
    (layout.tmp / "abandoned.part").write_bytes(b"?")
    recovery = Recovery(spool)
    recovery.scan()
    clock.step(-7 * DEAD_STAGING_AGE_S)
    clock.advance(DEAD_STAGING_AGE_S + 5)
    recovery.scan()
    assert listing(layout.tmp) == []


def test_throughput_after_a_step_back_counts_no_record_from_the_future(spool: Spool) -> None:
    """done_last_60s counted every record written at or after a minute ago, so after a
    step back of an hour every record of the hour before the step (dated "in the
    future") counted as finished in the last minute, for that hour: a throughput sixty
    times what it was. A record dated after now is not counted until now reaches it."""
    for job_id in ("a", "b"):
        submit(spool, job_id)
        run_to_end(spool, job_id)
    reader = SpoolReader(spool.layout)
    assert reader.stats()["throughput"] == {"done_last_60s": 2, "failed_last_60s": 0}
    stats = reader.stats(now=time.time() - 3600)
    assert stats["throughput"] == {"done_last_60s": 0, "failed_last_60s": 0}


def test_spoolq_stats_says_no_negative_ages_after_a_step_back() -> None:
    """A heartbeat or an I/O outage dated after now (stamped before the wall clock stepped
    back an hour) read "last heartbeat -3599.00s ago", "I/O trouble for -60.0m"."""
    ahead = datetime.now(UTC) + timedelta(hours=1)
    stats = {"counts": {"pending": 0, "running": 0, "done": 0, "failed": 0},
             "oldest_pending_age_s": None, "busy_workers": 0, "job_num": 2,
             "processor": {"alive": True, "count": 1, "heartbeat_at": ahead},
             "processors": [{"alive": True, "stopping": False, "io_trouble": {
                 "error": "disk full", "since": ahead, "retry_at": ahead}}],
             "throughput": {"done_last_60s": 0, "failed_last_60s": 0}}
    text = "\n".join(stats_lines(stats))
    assert "-" not in text.replace("I/O trouble", ""), text
    assert "last heartbeat 0.00s ago" in text and "I/O trouble for 0.00s" in text
