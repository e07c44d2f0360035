"""A recovery pass on a spool that is no longer the directory its process locks in.

A processor's runs are locked where it claimed them.  Remounted under it (a FUSE mount's
locks are its own), the spool's running files are free to lock through the path, and
the processor's own periodic pass requeued a job it was running: a double run, seen in
tests/processor/test_spool_fuse.py's ``unmounted`` case under load, the remount landing
between the loop's check of the spool and the pass's lock.  The pass now asks, once it
has locked a file and before it changes it, whether the spool is still its own
(``still_ours``); not, it stops with SpoolChanged and changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from spoolkit import Holders, listing, locate, submit

from spool.errors import SpoolChanged
from spool.lease import is_locked
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool


def _asked_locked(spool: Spool, answers: list[bool]) -> tuple[Callable[[], bool],
                                                             list[list[str]]]:
    """A ``still_ours`` giving ``answers`` in turn, and, for each time it is asked, the
    files under owners/ and running/ locked then (by the pass: their holder is dead)."""
    seen: list[list[str]] = []

    def still_ours() -> bool:
        layout = spool.layout
        seen.append([f"{folder.name}/{name}" for folder in (layout.owners,
                                                            layout.folder(JobState.RUNNING))
                     for name in listing(folder) if is_locked(folder / name)])
        return answers.pop(0)

    return still_ours, seen


def test_a_pass_stops_before_it_settles_an_orphan_on_a_spool_not_its_own(
        spool: Spool, holders: Holders) -> None:
    submit(spool, "orphan")
    holders.sigkill(holders.hold(ids=["orphan"], owner="dead"))
    running = spool.layout.job(JobState.RUNNING, "orphan")
    before = running.read_bytes()
    # The dead owner's files: ours still.  The orphan, locked: the spool is not.
    still_ours, seen = _asked_locked(spool, [True, False])
    with pytest.raises(SpoolChanged, match=r"recovery stopped at running/orphan\.json"):
        Recovery(spool, still_ours=still_ours).scan()
    assert seen == [["owners/dead.lock"], ["running/orphan.json"]]  # asked under the lock
    assert locate(spool.layout, "orphan") == [JobState.RUNNING]
    assert running.read_bytes() == before
    assert not is_locked(running)  # the pass let its lock go
    assert listing(spool.layout.owners) == []  # the dead owner's files: it was ours then
    # The spool its own again, the next pass settles the orphan.
    assert Recovery(spool).scan().abandoned == ["orphan"]


def test_a_pass_keeps_a_dead_owners_files_on_a_spool_not_its_own(
        spool: Spool, holders: Holders) -> None:
    holders.sigkill(holders.hold(ids=[], owner="dead"))
    owners = listing(spool.layout.owners)
    assert "dead.lock" in owners
    still_ours, seen = _asked_locked(spool, [False])
    with pytest.raises(SpoolChanged, match=r"recovery stopped at owners/dead\.lock"):
        Recovery(spool, still_ours=still_ours).scan()
    assert seen == [["owners/dead.lock"]]
    assert listing(spool.layout.owners) == owners
    assert all(not is_locked(spool.layout.owners / name) for name in owners)
    Recovery(spool).scan()
    assert listing(spool.layout.owners) == []


def test_a_pass_on_its_own_spool_asks_and_settles(spool: Spool, holders: Holders) -> None:
    submit(spool, "orphan", max_attempts=2)
    holders.sigkill(holders.hold(ids=["orphan"], owner="dead"))
    still_ours, seen = _asked_locked(spool, [True, True])
    assert Recovery(spool, still_ours=still_ours).scan().requeued == ["orphan"]
    assert len(seen) == 2
    assert os.path.exists(spool.layout.job(JobState.PENDING, "orphan"))
