"""A no-replace move of a directory where the filesystem has no ``RENAME_NOREPLACE``
(NFS, where a stale handle is common): a directory cannot be hard-linked, so the Mover
looks the name up and renames.  ``os.path.lexists`` took that lookup's failure (EIO,
ESTALE) for a free name, and the rename then replaced what held it when that was an
empty directory: an earlier drop's kept original (``failed/<id>.orig``) lost, its
record then naming the wrong one.  The failure is raised as the rename's would be."""

from __future__ import annotations

import errno
import os

import pytest

from spool.errors import SpoolIOError
from spool.fsops import StrPath
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.mark.parametrize("error", [errno.EIO, errno.ESTALE])
def test_a_directory_move_whose_destination_cannot_be_looked_up_replaces_nothing(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    mover, layout = spool.mover, spool.layout
    mover._noreplace_native = False
    src = layout.job(JobState.PENDING, "d")
    src.mkdir()
    (src / "inside").write_bytes(b"a client's")
    kept = layout.original("d")
    kept.mkdir()  # an earlier drop of d.json: an empty directory, kept
    kept_inode = kept.stat().st_ino
    real_lstat = os.lstat

    def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == os.fspath(kept):
            raise OSError(error, os.strerror(error), os.fspath(kept))
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(SpoolIOError):
        mover.move(src, kept, replace=False)
    monkeypatch.undo()
    assert kept.stat().st_ino == kept_inode and os.listdir(kept) == []
    assert (src / "inside").read_bytes() == b"a client's"
