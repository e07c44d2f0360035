"""A claim whose move into ``running/`` landed, then found nothing there at its lookup:
the spool's folder went from under the processor between the two (a lazy unmount, a
FUSE daemon dead, then a new mount over the same path) or a hand removed the file.  The
lookup's ENOENT was taken for a bug and raised raw: the processor crashed (a traceback,
exit 1) where the change of its spool was to stop it with 75 and leave its runs to
recovery (seen in tests/processor/test_spool_fuse.py's ``unmounted`` case under load:
``FileNotFoundError: ... running/fast-33.json`` out of ``spool/claim.py``'s take)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from spool.errors import SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool


@pytest.mark.parametrize("code", [errno.ENOENT, errno.ENOTDIR])
def test_a_claim_whose_moved_file_is_gone_at_its_lookup_is_spool_trouble(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    layout = Layout(tmp_path / "spool")
    mover = Mover(layout, FsyncMode.NEVER)
    mover.make_folders()
    spool = Spool(layout, mover)
    Path(layout.job_str(JobState.PENDING, "x")).write_bytes(b'{"tool": "echo"}')
    dst = layout.job_str(JobState.RUNNING, "x")
    real = os.lstat
    looked: list[str] = []

    def gone_after_the_move(path: str, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == dst and not looked:
            looked.append(dst)  # the claim's own lookup; the give-back's finds the file
            raise OSError(code, os.strerror(code), dst)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", gone_after_the_move)
    with pytest.raises(SpoolIOError, match="cannot claim x"):
        spool.claim("x")
    monkeypatch.undo()
    # Given back where it can be (here: the file is still there, found by its inode).
    assert os.path.exists(layout.job_str(JobState.PENDING, "x"))
    assert not os.path.exists(dst)
