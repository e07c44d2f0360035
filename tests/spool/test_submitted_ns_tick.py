"""The submission order of drops made within one kernel timestamp tick (QA h332).

A file's ctime comes from the kernel's coarse clock: on a 250 Hz kernel 300 submits in a
burst had 18 distinct ctimes, each a little before the ``submitted_at`` spoolq wrote from
the fine clock.  ``Candidate.submitted_ns`` took the earlier of the two, so every drop of
a tick got the same key and equal priorities ran in id order, against DESIGN section 9
(submission order, then id) and against their own records.  A time ahead of the file's
coming by more than a tick (a copied mtime, a clock ahead) is still clamped to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spool.intake import COARSE_SLACK_NS, FUTURE_SLACK_NS, Candidate
from spool.models import Job


def _candidate(job_id: str, submitted: datetime | None, ctime_ns: int) -> Candidate:
    job = Job(tool="echo", submitted_at=submitted)
    return Candidate(job_id, job, 10, ctime_ns, (1, 1), ctime_ns)


def test_drops_of_one_tick_keep_their_submission_order() -> None:
    tick = 1_800_000_000_000_000_000  # one coarse ctime for both
    first = datetime.fromtimestamp(tick / 1e9, UTC) + timedelta(milliseconds=1)
    later = first + timedelta(milliseconds=2)
    a = _candidate("z-first", first, tick)
    b = _candidate("a-later", later, tick)
    assert a.submitted_ns < b.submitted_ns


def test_a_time_far_ahead_of_the_files_coming_is_clamped_to_it() -> None:
    ctime = 1_800_000_000_000_000_000
    ahead = datetime.fromtimestamp(ctime / 1e9, UTC) + timedelta(days=1)
    assert _candidate("x", ahead, ctime).submitted_ns == ctime
    just = datetime.fromtimestamp((ctime + FUTURE_SLACK_NS // 2) / 1e9, UTC)
    assert _candidate("y", just, ctime).submitted_ns > ctime


def test_a_clock_half_a_second_ahead_is_queued_as_the_file_came() -> None:
    """With a slack of 1 s, a job 0.5 s ahead ran after every job of its priority dropped
    in that half second (h337: 29 of a burst of 40), where one 5 s ahead ran in place."""
    ctime = 1_800_000_000_123_456_789
    ahead = datetime.fromtimestamp(ctime / 1e9, UTC) + timedelta(milliseconds=500)
    assert _candidate("x", ahead, ctime).submitted_ns == ctime


def test_a_filesystem_of_whole_seconds_keeps_the_submission_time() -> None:
    """Its ctime may be most of a second before the fine clock's ``submitted_at``."""
    ctime = 1_800_000_000_000_000_000
    first = datetime.fromtimestamp(ctime / 1e9, UTC) + timedelta(milliseconds=700)
    later = first + timedelta(milliseconds=100)
    a, b = _candidate("z-first", first, ctime), _candidate("a-later", later, ctime)
    assert ctime < a.submitted_ns < b.submitted_ns
    far = datetime.fromtimestamp((ctime + 2 * COARSE_SLACK_NS) / 1e9, UTC)
    assert _candidate("y", far, ctime).submitted_ns == ctime
