"""``spool.large.read_record`` of a record rewritten in place while it is read.

It read a file whole when its stat said it was small, to its end however far that had
grown meanwhile: statusd, rescanning a 192 MB record being rewritten in place, held
1 GB (tests/statusd/test_statusd_large_records.py failed its memory bound once in a
full run).  A read never goes past ``PARSE_MAX_BYTES`` plus a chunk; a file grown past
it since its stat is read from its head, as a large one is.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from spool.large import PARSE_MAX_BYTES, Head, read_record

MiB = 1024 * 1024


def test_a_record_growing_under_the_read_is_read_no_further_than_the_bound(
        tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"{}")
    done = threading.Event()

    def rewrite() -> None:  # truncated, then grown a MiB at a time, as an in-place writer
        chunk = b"x" * MiB
        while not done.is_set():
            with path.open("wb") as out:
                out.write(b'{"result":"')
                for _ in range(3 * PARSE_MAX_BYTES // MiB):
                    out.write(chunk)
                out.write(b'"}')

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = {"whole": 0, "head": 0}
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and min(reads.values()) < 20:
            found = read_record(path)
            if isinstance(found, Head):
                reads["head"] += 1
                assert len(found.head) <= PARSE_MAX_BYTES
            elif found is not None:
                reads["whole"] += 1
                assert len(found) <= PARSE_MAX_BYTES, len(found)
    finally:
        done.set()
        writer.join()
    assert reads["whole"] and reads["head"], reads  # both sides of the bound were met


def test_statusds_read_of_a_record_rewritten_in_place_stays_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """statusd's read of one record (``statusd.bodies.body_of``): a read that caught the
    record short (no valid record yet) read it again, whole, by then grown to 192 MiB,
    and statusd peaked at 1 GiB (a full run, after the bound above).  What was read is
    what is told.  The first read is made to catch the file short, as the race does."""
    from spool.fsops import Mover  # noqa: PLC0415 - statusd's own step, tested here
    from spool.layout import Layout  # noqa: PLC0415
    from spool.models import Record, record_bytes  # noqa: PLC0415
    from spool.reader import SpoolReader  # noqa: PLC0415
    from spool.settings import FsyncMode  # noqa: PLC0415
    from spool.states import JobState  # noqa: PLC0415
    from statusd import bodies  # noqa: PLC0415
    from statusd.items import Stamp  # noqa: PLC0415

    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    path = layout.job(JobState.DONE, "big")
    head, _, _ = record_bytes(Record(id="big", state=JobState.DONE, tool="echo",
                                     result="@")).partition(b'"@"')
    with path.open("wb") as out:  # grown by the time of the second look
        out.write(head + b'"')
        for _ in range(3 * PARSE_MAX_BYTES // MiB):
            out.write(b"x" * MiB)
        out.write(b'"}')
    monkeypatch.setattr(bodies, "read_record", lambda *a, **k: head + b'"xx')
    st = path.stat()
    body = bodies.body_of(layout, SpoolReader(layout), "big",
                          Stamp(JobState.DONE, st.st_mtime_ns, st.st_ctime_ns, 0, st.st_ino))
    assert isinstance(body, bytes) and len(body) <= PARSE_MAX_BYTES, \
        None if body is None else len(body)
    assert b'"unreadable"' in body  # told as the record it read: cut short
