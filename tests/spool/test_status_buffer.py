"""The processor's status file is replaced by swapping names with a kept buffer inode
(``Mover.publish_advisory``), not by a rename that frees the inode it replaces: on ext4
mounted with ``discard`` that free cost about 0.4 ms of the loop that completes jobs,
ten times a second while jobs finish.  A reader must still only ever see a whole file,
and a file a reader holds is never written into."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spoolkit import listing, make_spool

from spool.fsops import SPARE_TAG
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return make_spool(tmp_path / "spool", recycle=True)


def buffers(spool: Spool) -> list[str]:
    return [n for n in listing(spool.layout.stage) if n.startswith(SPARE_TAG + ".")]


def test_two_inodes_take_turns_and_none_is_freed(spool: Spool) -> None:
    dest = spool.layout.owner_status("vm-1-abcd")
    mover, seen = spool.mover, []
    for i in range(6):
        data = b'{"n": %d, "pad": "%s"}' % (i, b"x" * (50 - 8 * i))  # shrinks: truncated
        mover.publish_advisory(dest, data)
        assert dest.read_bytes() == data
        seen.append(os.stat(dest).st_ino)
        assert len(buffers(spool)) == 1  # from the first call on (see test_inodes_used_up)
    assert len(set(seen)) == 2, seen
    assert seen[0::2] == [seen[0]] * 3 and seen[1::2] == [seen[1]] * 3
    (buffer,) = buffers(spool)
    assert mover.holds_spare(spool.layout.stage / buffer)  # a recovery scan leaves it
    assert os.stat(spool.layout.stage / buffer).st_nlink == 1
    mover.drop_spares()
    assert buffers(spool) == []
    assert dest.read_bytes() == data


def test_a_file_a_reader_holds_is_never_written_into(spool: Spool) -> None:
    dest = spool.layout.owner_status("vm-1-abcd")
    mover = spool.mover
    mover.publish_advisory(dest, b'{"first": 1}')
    mover.publish_advisory(dest, b'{"second": 2}')
    fd = os.open(dest, os.O_RDONLY)  # a reader (statusd, spoolq stats) mid-read
    try:
        held = os.fstat(fd).st_ino
        mover.publish_advisory(dest, b'{"third": 3}')  # the held file becomes the buffer
        mover.publish_advisory(dest, b'{"fourth": 4, "longer": true}')  # not rewritten
        assert os.pread(fd, 100, 0) == b'{"second": 2}'
        assert dest.read_bytes() == b'{"fourth": 4, "longer": true}'
        assert os.stat(dest).st_ino != held
    finally:
        os.close(fd)
    mover.publish_advisory(dest, b'{"fifth": 5}')
    assert dest.read_bytes() == b'{"fifth": 5}'
    assert len(buffers(spool)) == 1
    mover.drop_spares()


def test_a_mover_that_does_not_recycle_publishes(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    dest = spool.layout.owner_status("vm-1-abcd")
    for data in (b"{}", b'{"a": 1}'):
        spool.mover.publish_advisory(dest, data)
        assert dest.read_bytes() == data
    assert buffers(spool) == []
