"""A reader out of descriptors: a job whose file it cannot open is spool trouble, not
"no job".

``SpoolReader.get`` took a file it could not open (EMFILE) for one that moved away, and
after its looks said the job did not exist: ``spoolq show`` and ``wait`` exited 1 with
"no job", and statusd's cancel and retry, which look the job up through it, answered
404 for a job in the spool.  The opens are made to fail, as a real limit cannot aim at
them alone.
"""

from __future__ import annotations

import errno
import os

import pytest
from spoolkit import done_record, submit

from spool import entries, large
from spool.client import Client
from spool.errors import NotFoundError, SpoolIOError
from spool.reader import SpoolReader
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _out_of_descriptors(path: str | os.PathLike[str]) -> int:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(path))


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.DONE])
def test_a_job_unopened_for_lack_of_descriptors_is_spool_trouble(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, state: JobState) -> None:
    submit(spool, "there")
    if state is JobState.DONE:
        claim = spool.claim("there")
        assert claim is not None
        spool.complete(claim, done_record(claim, {"ok": True}))
    reader = SpoolReader(spool.layout)
    assert reader.get("there").state is state
    for module in (entries, large):
        monkeypatch.setattr(module, "open_nofollow", _out_of_descriptors)
    with pytest.raises(SpoolIOError, match="Too many open files"):
        reader.get("there")
    with pytest.raises(NotFoundError):  # a job that is not there is still none
        reader.get("absent")


def test_wait_looks_again_through_a_lack_of_descriptors(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``spoolq wait`` (and ``submit --wait``, statusd's cancel) polls the job: a look
    that cannot open its file is looked at again, as a look that finds it moving is,
    never the end of the wait."""
    submit(spool, "slow")
    claim = spool.claim("slow")
    assert claim is not None
    spool.complete(claim, done_record(claim, {"ok": True}))
    failed: list[str] = []
    real = entries.open_nofollow

    def short_twice(path: str | os.PathLike[str]) -> int:
        if len(failed) < 2:
            failed.append(os.fspath(path))
            return _out_of_descriptors(path)
        return real(path)

    for module in (entries, large):
        monkeypatch.setattr(module, "open_nofollow", short_twice)
    record = Client(spool.layout, spool.mover).wait("slow", timeout=5.0)
    assert record.state is JobState.DONE
    assert len(failed) == 2
