"""A bad drop of an id whose earlier quarantined original (``failed/<id>.orig``) the disk
cannot look up (EIO: a bad sector under it) is quarantined under an id of its own, as
when that original is seen there: never over the earlier one's record.  Asked of
``os.path.lexists``, which takes the error for nothing there, the quarantine went on
under the drop's id: its move to the original's name found it taken (and was not
checked), and its record replaced the earlier drop's, which then said nothing of the
bytes kept, while the new drop's bytes stayed where moves stage."""

from __future__ import annotations

import errno
import os

import pytest
from spoolkit import drop_raw, listing, read_json

from spool.fsops import StrPath
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _quarantine(spool: Spool, data: bytes, message: str) -> None:
    drop_raw(spool.layout, "m.json", data)
    st = os.lstat(spool.layout.job(JobState.PENDING, "m"))
    assert spool.quarantine("m.json", message, kind="file", size=st.st_size,
                            mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))


def test_a_drop_whose_ids_original_cannot_be_looked_up_gets_an_id_of_its_own(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = spool.layout
    _quarantine(spool, b"[1, 2]", "the earlier drop")
    earlier = read_json(layout.job(JobState.FAILED, "m"))
    original = layout.original_str("m")
    real_lstat = os.lstat

    def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == original:
            raise OSError(errno.EIO, os.strerror(errno.EIO), original)
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    _quarantine(spool, b"[3, 4]", "the later drop")
    monkeypatch.undo()
    assert read_json(layout.job(JobState.FAILED, "m")) == earlier, \
        "the earlier drop's record was replaced"
    assert layout.original("m").read_bytes() == b"[1, 2]"
    [own] = [name.removesuffix(".orig") for name in listing(layout.folder(JobState.FAILED))
             if name.endswith(".orig") and name != "m.orig"]
    assert layout.original(own).read_bytes() == b"[3, 4]"
    record = read_json(layout.job(JobState.FAILED, own))
    assert record["error"]["message"].startswith("the later drop")
    assert "cannot be looked up" in record["error"]["message"]
    assert record["source"]["name"] == "m.json"
    assert listing(layout.stage) == [] and listing(layout.tmp) == []
    assert listing(layout.folder(JobState.PENDING)) == []


def test_a_drop_whose_ids_original_came_meanwhile_is_judged_again(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another drop of the id quarantined between the lookup and the move (another
    processor's): the move found the name taken and was not checked, and this drop's
    record replaced that one's.  It now goes back to ``pending/``, judged again: under an
    id of its own then."""
    layout = spool.layout
    original = layout.original_str("m")
    real_move = spool.mover.move
    came: list[bool] = []

    def move(src: StrPath, dst: StrPath, **kw: object) -> bool:
        if os.fspath(dst) == original and not came:
            came.append(True)
            _quarantine(spool, b"[1, 2]", "the other drop")  # as another processor's
        return real_move(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(spool.mover, "move", move)
    drop_raw(layout, "m.json", b"[3, 4]")
    st = os.lstat(layout.job(JobState.PENDING, "m"))
    assert spool.quarantine("m.json", "this drop", kind="file", size=st.st_size,
                            mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev)) is None
    monkeypatch.undo()
    assert came
    assert read_json(layout.job(JobState.FAILED, "m"))["error"]["message"] == "the other drop"
    assert layout.original("m").read_bytes() == b"[1, 2]"
    assert layout.job(JobState.PENDING, "m").read_bytes() == b"[3, 4]"
    assert listing(layout.stage) == [] and listing(layout.tmp) == []
    _quarantine(spool, b"[3, 4]", "this drop")  # judged again
    [own] = [name.removesuffix(".orig") for name in listing(layout.folder(JobState.FAILED))
             if name.endswith(".orig") and name != "m.orig"]
    assert layout.original(own).read_bytes() == b"[3, 4]"
