"""Hostile drops: each ends in ``failed/`` with its reason and the original kept
as ``failed/<id>.orig`` (renamed, never copied or followed); nothing outside the
spool is read; in-progress names are ignored; unparsable files wait to settle."""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spoolkit import (
    FakeClock,
    done_record,
    drop_raw,
    listing,
    locate,
    make_spool,
    read_json,
    submit,
)

from spool import intake as intake_module
from spool.intake import OPEN_WRITER_WAIT_S, Inspection, Intake, Verdict
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, F = JobState.PENDING, JobState.RUNNING, JobState.FAILED
MAX_BYTES = 1024
SETTLE_S = 2.0
VALID = b'{"tool": "echo", "params": {"message": "hi"}}'


@pytest.fixture
def intake(spool: Spool, clock: FakeClock) -> Intake:
    return Intake(spool, max_job_bytes=MAX_BYTES, settle_s=SETTLE_S, clock=clock)


def quarantined(spool: Spool, insp: Inspection, name: str, reason: str) -> str:
    """Check the quarantine of pending entry ``name``; returns the record's id."""
    assert insp.verdict is Verdict.QUARANTINED, insp
    assert insp.record is not None
    job_id = insp.record.id
    assert name not in os.listdir(spool.layout.folder(P))
    record = read_json(spool.layout.job(F, job_id))
    assert record["state"] == "failed"
    assert record["error"]["type"] == "invalid_job"
    assert reason in record["error"]["message"], record["error"]["message"]
    assert insp.record.source is not None
    assert record["source"]["name"] == insp.record.source.name
    assert os.path.lexists(spool.layout.original(job_id))
    assert listing(spool.layout.tmp) == []
    return job_id


def quarantined_file(spool: Spool, insp: Inspection, name: str, reason: str,
                     data: bytes) -> str:
    job_id = quarantined(spool, insp, name, reason)
    orig = spool.layout.original(job_id)
    assert not orig.is_symlink() and orig.read_bytes() == data, "original bytes kept"
    assert read_json(spool.layout.job(F, job_id))["source"]["size"] == len(data)
    return job_id


# -- names ------------------------------------------------------------------------------


def settled(intake: Intake, clock: FakeClock, name: str) -> Inspection:
    """``name`` inspected once it has stayed unchanged for the settle time (a bad name
    waits for it, as an unparsable file does)."""
    assert intake.inspect(name).verdict is Verdict.WAITING
    clock.advance(SETTLE_S)
    return intake.inspect(name)


@pytest.mark.parametrize("name", [
    "ünïcode.json", "new\nline.json", "-leading-dash.json", "no-suffix", "job.txt",
    "sp ace.json", "x" * 129 + ".json", "semi;colon.json", "UPPER.JSON",
])
def test_bad_names_quarantined(spool: Spool, intake: Intake, clock: FakeClock,
                               name: str) -> None:
    drop_raw(spool.layout, name, VALID)
    job_id = quarantined_file(spool, settled(intake, clock, name), name, "bad file name",
                              VALID)
    assert job_id.startswith("invalid-")
    assert read_json(spool.layout.job(F, job_id))["source"]["name"] == name


def test_a_writers_temporary_file_is_left_to_its_rename(spool: Spool, intake: Intake,
                                                        clock: FakeClock) -> None:
    """``sed -i``, ``NamedTemporaryFile`` then ``os.replace``, an editor's save: a file
    under a name no job has, renamed to the job's a moment later.  Quarantined at once,
    the writer's rename failed (sed: "cannot rename", 17 of 20 os.replace) and a junk
    record was left (QA)."""
    drop_raw(spool.layout, "sedeBMRNf", VALID)
    assert intake.inspect("sedeBMRNf").verdict is Verdict.WAITING
    clock.advance(SETTLE_S / 2)
    os.rename(spool.layout.folder(P) / "sedeBMRNf", spool.layout.folder(P) / "edited.json")
    assert intake.inspect("sedeBMRNf").verdict is Verdict.GONE
    assert intake.inspect("edited.json").verdict is Verdict.READY
    assert listing(spool.layout.folder(F)) == []


def test_a_bad_name_still_being_written_waits_until_it_is_whole(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    """Judged by the name at once, a bad name still being written was recorded with the
    size it had then (0 or 8 bytes) beside an .orig that went on growing (QA)."""
    name = "sp ace.json"
    with open(spool.layout.folder(P) / name, "wb") as writer:
        writer.write(VALID[:8])
        writer.flush()
        assert intake.inspect(name).verdict is Verdict.WAITING
        clock.advance(SETTLE_S * 0.9)
        writer.write(VALID[8:])  # a change starts the wait again
        writer.flush()
        assert intake.inspect(name).verdict is Verdict.WAITING
        clock.advance(SETTLE_S * 0.9)
        assert intake.inspect(name).verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.1)
    quarantined_file(spool, intake.inspect(name), name, "bad file name", VALID)


def test_undecodable_name_quarantined(spool: Spool, intake: Intake, clock: FakeClock) -> None:
    raw = os.fsencode(spool.layout.folder(P)) + b"/caf\xe9.json"
    with open(raw, "wb") as handle:
        handle.write(VALID)
    (name,) = os.listdir(spool.layout.folder(P))
    job_id = quarantined_file(spool, settled(intake, clock, name), name, "bad file name",
                              VALID)
    assert read_json(spool.layout.job(F, job_id))["source"]["name"] == "caf\\xe9.json"


@pytest.mark.parametrize("name", [
    ".hidden.json", "a.json.tmp", "a.part", "a.partial", "a.filepart", "a.crdownload",
    "a.json~", "a.json.TMP", "a.Part", "a.CRDOWNLOAD",  # any case: a Windows uploader's
])
def test_in_progress_names_ignored(spool: Spool, intake: Intake, clock: FakeClock,
                                   name: str) -> None:
    path = drop_raw(spool.layout, name, b"half a jo")
    for _ in range(3):
        assert intake.inspect(name).verdict is Verdict.IGNORED
        clock.advance(SETTLE_S * 10)
    assert path.read_bytes() == b"half a jo"
    assert listing(spool.layout.folder(F)) == []


def test_vanished_entry_is_gone(intake: Intake) -> None:
    assert intake.inspect("nothing.json").verdict is Verdict.GONE


# -- sizes and links ----------------------------------------------------------------------


def test_oversized_quarantined_unread(spool: Spool, intake: Intake) -> None:
    data = b'{"tool": "echo", "params": {"pad": "' + b"x" * MAX_BYTES + b'"}}'
    drop_raw(spool.layout, "big.json", data)
    job_id = quarantined_file(spool, intake.inspect("big.json"), "big.json", "too large", data)
    assert job_id == "big"


def test_a_job_of_exactly_the_limit_is_ready_and_one_byte_more_is_too_large(
        spool: Spool, intake: Intake) -> None:
    """SPOOL_MAX_JOB_BYTES is the largest job file taken (DESIGN section 7: larger ones
    fail as ``invalid_job``): one of exactly that many bytes is a job, one a byte longer
    is quarantined as too large, its bytes kept."""
    head, tail = b'{"tool": "echo", "params": {"message": "', b'"}}'

    def padded(size: int) -> bytes:
        return head + b"x" * (size - len(head) - len(tail)) + tail

    at, over = padded(MAX_BYTES), padded(MAX_BYTES + 1)
    assert (len(at), len(over)) == (MAX_BYTES, MAX_BYTES + 1)
    drop_raw(spool.layout, "at.json", at)
    drop_raw(spool.layout, "over.json", over)
    assert intake.inspect("at.json").verdict is Verdict.READY
    insp = intake.inspect("over.json")
    assert insp.verdict is Verdict.QUARANTINED and insp.record is not None
    assert insp.record.id == "over" and insp.record.error is not None
    assert insp.record.error.message.startswith(f"too large: {MAX_BYTES + 1} bytes")
    assert spool.layout.original("over").read_bytes() == over


def test_an_invalid_job_of_exactly_the_limit_is_said_invalid_not_too_large(
        spool: Spool, intake: Intake) -> None:
    """A file of exactly SPOOL_MAX_JOB_BYTES is within the limit, whatever else is wrong
    with it: its record says what is (here its tool), never "too large: 1024 bytes is
    over SPOOL_MAX_JOB_BYTES=1024", which sends its writer to trim a file that fits."""
    head, tail = b'{"tool": 5, "params": {"message": "', b'"}}'
    data = head + b"x" * (MAX_BYTES - len(head) - len(tail)) + tail
    assert len(data) == MAX_BYTES
    drop_raw(spool.layout, "at.json", data)
    insp = intake.inspect("at.json")
    assert insp.verdict is Verdict.QUARANTINED and insp.record is not None
    assert insp.record.error is not None
    assert insp.record.error.message.startswith("invalid job: tool"), insp.record.error.message
    assert spool.layout.original("at").read_bytes() == data


def test_a_file_over_the_limit_that_is_no_json_is_too_large_at_once(
        spool: Spool, intake: Intake) -> None:
    """Unparsable and over SPOOL_MAX_JOB_BYTES, a file is no job however it ends: it is
    quarantined at once as too large, not left to settle (a writer at work could only
    make it larger) and then said malformed."""
    data = b'{"tool": "echo", "params": {"message": "' + b"x" * MAX_BYTES
    drop_raw(spool.layout, "big.json", data)
    insp = intake.inspect("big.json")
    assert insp.verdict is Verdict.QUARANTINED and insp.record is not None
    assert insp.record.error is not None
    assert insp.record.error.message.startswith(f"too large: {len(data)} bytes")
    assert spool.layout.original("big").read_bytes() == data


def test_a_drop_too_large_to_pass_is_judged_by_its_size_unread(
        spool: Spool, intake: Intake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drop past what any job (requeue fields forgiven) can be is quarantined from its
    size: it was read and parsed whole up to 16 MiB, about 3.7 s of the processor's loop
    each (timeouts of running jobs held up).  One just within is still read."""
    data = b'{"tool": "echo", "params": {"pad": [' + b"0," * intake.read_limit + b'0]}}'
    drop_raw(spool.layout, "huge.json", data)
    drop_raw(spool.layout, "near.json", VALID[:-1] + b', "error": {"type": "timeout", '
             b'"message": "' + b"m" * MAX_BYTES + b'"}}')
    reads: list[int] = []
    real_read = intake_module.read_fd
    monkeypatch.setattr(intake_module, "read_fd", lambda fd, *a: reads.append(fd) or
                        real_read(fd, *a))
    quarantined_file(spool, intake.inspect("huge.json"), "huge.json", "too large", data)
    assert reads == [] and intake.read_limit < len(data)
    assert intake.inspect("near.json").verdict is Verdict.READY and len(reads) == 1


def atime_is_tracked(folder: Path) -> bool:
    """Whether reading a file moves its atime here (relatime does when atime < mtime)."""
    probe = folder / "atime-probe"
    probe.write_bytes(b"probe")
    past = time.time() - 3600
    os.utime(probe, (past, time.time()))
    before = os.stat(probe).st_atime_ns
    probe.read_bytes()
    tracked = os.stat(probe).st_atime_ns != before
    probe.unlink()
    return tracked


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def test_symlink_to_file_outside_is_never_followed(spool: Spool, intake: Intake,
                                                   outside: Path) -> None:
    target = outside / "secret.json"
    target.write_bytes(VALID)
    past = time.time() - 3600
    os.utime(target, (past, time.time()))  # atime < mtime: any read would move it
    before = os.stat(target)
    os.symlink(target, spool.layout.folder(P) / "link.json")
    job_id = quarantined(spool, intake.inspect("link.json"), "link.json", "symlink")
    orig = spool.layout.original(job_id)
    assert orig.is_symlink() and os.readlink(orig) == str(target)
    after = os.stat(target)
    assert target.read_bytes() == VALID and after.st_ino == before.st_ino
    assert after.st_mtime_ns == before.st_mtime_ns
    if atime_is_tracked(outside):
        assert after.st_atime_ns == before.st_atime_ns, "the symlink's target was read"
    assert read_json(spool.layout.job(F, job_id))["source"]["kind"] == "symlink"


@pytest.mark.parametrize("target_kind", ["dir", "dangling"])
def test_symlink_to_dir_or_nothing(spool: Spool, intake: Intake, outside: Path,
                                   target_kind: str) -> None:
    target = outside / "target"
    if target_kind == "dir":
        target.mkdir()
        (target / "inside.json").write_bytes(VALID)
    os.symlink(target, spool.layout.folder(P) / "ln.json")
    job_id = quarantined(spool, intake.inspect("ln.json"), "ln.json", "symlink")
    assert spool.layout.original(job_id).is_symlink()
    if target_kind == "dir":
        assert (target / "inside.json").read_bytes() == VALID


def test_hard_link_quarantined(spool: Spool, intake: Intake, outside: Path,
                               clock: FakeClock) -> None:
    """Once it has stayed a hard link for the settle time (see the next test)."""
    path = drop_raw(spool.layout, "hl.json", VALID)
    other = outside / "other-name"
    os.link(path, other)
    assert intake.inspect("hl.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S)
    job_id = quarantined_file(spool, intake.inspect("hl.json"), "hl.json", "hard link", VALID)
    assert os.stat(other).st_ino == os.stat(spool.layout.original(job_id)).st_ino
    assert other.read_bytes() == VALID


def test_a_drop_linked_in_then_unlinked_from_tmp_is_a_job(spool: Spool, intake: Intake,
                                                         clock: FakeClock) -> None:
    """A no-clobber drop: link the staged file to ``pending/<id>.json``, then unlink the
    staged name (a maildir-style writer; spoolq's own publish where the filesystem has
    no RENAME_NOREPLACE).  Seen between the two, it was quarantined as a hard link at
    once: a job its client was told was submitted failed 'hard link', never run."""
    staged = spool.layout.tmp / "staged"
    staged.write_bytes(VALID)
    os.link(staged, spool.layout.job(P, "nc"))
    assert intake.inspect("nc.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.9)
    assert intake.inspect("nc.json").verdict is Verdict.WAITING
    staged.unlink()
    insp = intake.inspect("nc.json")
    assert insp.verdict is Verdict.READY and insp.candidate is not None
    assert insp.candidate.job.tool == "echo"
    assert locate(spool.layout, "nc") == [P]


def test_a_second_link_made_by_a_claim_in_progress_is_not_quarantined(
        spool: Spool, intake: Intake) -> None:
    """Without RENAME_NOREPLACE (NFS), a claim links the file into running/ under its lease
    and then unlinks it from pending/: the two links are not a client's hard link (the id
    is running, so the drop waits rather than being judged)."""
    path = drop_raw(spool.layout, "nfs.json", VALID)
    lease = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(lease, fcntl.LOCK_EX)
        os.link(path, spool.layout.job(R, "nfs"))
        assert intake.inspect("nfs.json").verdict is Verdict.WAITING
        os.unlink(path)  # the claim's unlink: gone from pending/, nothing quarantined
        assert intake.inspect("nfs.json").verdict is Verdict.GONE
        assert locate(spool.layout, "nfs") == [R]
    finally:
        os.close(lease)


# -- not regular files ----------------------------------------------------------------------


def inspect_with_deadline(intake: Intake, name: str, fifo: Path | None = None,
                          seconds: float = 5.0) -> Inspection:
    """``inspect`` in a thread; a hang fails the test (and is unblocked first)."""
    result: list[Inspection] = []
    worker = threading.Thread(target=lambda: result.append(intake.inspect(name)))
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        if fifo is not None:  # a blocked reader of the FIFO: give it a writer
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join()
        pytest.fail(f"inspect({name!r}) blocked for {seconds} s")
    return result[0]


def test_fifo_never_blocks(spool: Spool, intake: Intake) -> None:
    fifo = spool.layout.folder(P) / "x.json"
    os.mkfifo(fifo)
    assert spool.claim("x") is None, "a claim refuses (and does not block on) a FIFO"
    insp = inspect_with_deadline(intake, "x.json", fifo)
    job_id = quarantined(spool, insp, "x.json", "not a regular file: fifo")
    assert job_id == "x"
    assert spool.layout.original("x").is_fifo()


@pytest.fixture
def short_spool(clock: FakeClock) -> Iterator[Spool]:
    """A spool under a short /tmp path: unix socket paths are limited to ~107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="sq"))
    try:
        yield make_spool(root / "s", clock=clock)
    finally:
        shutil.rmtree(root)


def test_unix_socket_quarantined(short_spool: Spool, clock: FakeClock) -> None:
    intake = Intake(short_spool, max_job_bytes=MAX_BYTES, settle_s=SETTLE_S, clock=clock)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(short_spool.layout.folder(P) / "sock.json"))
        insp = inspect_with_deadline(intake, "sock.json")
    quarantined(short_spool, insp, "sock.json", "not a regular file: socket")
    assert short_spool.layout.original("sock").is_socket()


def test_directory_quarantined_with_contents_once_it_stops_filling(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    """A folder was quarantined as soon as it was seen: one that tar -x or cp -r was
    filling was quarantined again and again, in parts, and what the tool then failed to
    write was in no part (QA).  It waits for the settle time, unchanged, as a file does."""
    folder = spool.layout.folder(P) / "d.json"
    folder.mkdir()
    (folder / "inner.json").write_bytes(VALID)
    assert intake.inspect("d.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S / 2)
    time.sleep(0.03)  # the coarse filesystem clock must tick for the folder's mtime
    (folder / "second.json").write_bytes(VALID)  # still filling: the wait starts again
    assert intake.inspect("d.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.9)
    assert intake.inspect("d.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.2)
    quarantined(spool, intake.inspect("d.json"), "d.json", "not a regular file: directory")
    assert (spool.layout.original("d") / "inner.json").read_bytes() == VALID
    assert (spool.layout.original("d") / "second.json").read_bytes() == VALID


@pytest.mark.usefixtures("sigio_ignored")
def test_a_file_still_open_for_writing_waits_past_the_settle_time(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    """A writer that created its file and then waited on its source (wget -O from a slow
    server) had the job failed "empty file" after the settle time, and went on writing
    into the quarantine, told all was well (QA)."""
    path = spool.layout.folder(P) / "slow.json"
    with path.open("wb") as writer:
        assert intake.inspect("slow.json").verdict is Verdict.WAITING
        clock.advance(SETTLE_S * 2)
        assert intake.inspect("slow.json").verdict is Verdict.WRITING
        clock.advance(OPEN_WRITER_WAIT_S / 2)
        assert intake.inspect("slow.json").verdict is Verdict.WRITING
        writer.write(VALID)
    assert intake.inspect("slow.json").verdict is Verdict.READY
    # Closed and still unparsable: quarantined once settled, as before.
    path.write_bytes(VALID[:10])
    assert intake.inspect("slow.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S)
    quarantined(spool, intake.inspect("slow.json"), "slow.json", "malformed JSON")


@pytest.mark.usefixtures("sigio_ignored")
def test_a_writer_that_holds_its_file_unchanged_for_good_is_quarantined_in_the_end(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    path = spool.layout.folder(P) / "stuck.json"
    with path.open("wb"):
        assert intake.inspect("stuck.json").verdict is Verdict.WAITING
        clock.advance(OPEN_WRITER_WAIT_S - 1)
        assert intake.inspect("stuck.json").verdict is Verdict.WRITING
        clock.advance(1)
        quarantined(spool, intake.inspect("stuck.json"), "stuck.json",
                    "malformed JSON: empty file (unchanged for 600 s, still open for writing)")


def test_where_no_lease_can_tell_the_change_feed_s_word_holds_a_file_open(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    """A processor that may not lease a file (another user's, under the shipped units'
    user without CAP_LEASE) failed a slow writer's job "empty file" after the settle
    time: the change feed's word that its creator has not closed it yet holds it."""
    assert signal.getsignal(signal.SIGIO) is signal.SIG_DFL  # no lease asked for
    writing = {"slow.json", "linked.json", "stuck.json"}
    intake.being_written = lambda name, inode: name in writing
    drop_raw(spool.layout, "slow.json", b'{"tool": ')
    assert intake.inspect("slow.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 2)
    assert intake.inspect("slow.json").verdict is Verdict.WRITING
    writing.discard("slow.json")  # its writer closed it
    quarantined(spool, intake.inspect("slow.json"), "slow.json", "malformed JSON")

    # Held to the end of the wait: the note says what is known, not an open file.
    drop_raw(spool.layout, "stuck.json", b"")
    assert intake.inspect("stuck.json").verdict is Verdict.WAITING
    clock.advance(OPEN_WRITER_WAIT_S - 1)
    assert intake.inspect("stuck.json").verdict is Verdict.WRITING
    clock.advance(1)
    quarantined(spool, intake.inspect("stuck.json"), "stuck.json",
                "malformed JSON: empty file (unchanged for 600 s, not closed after writing "
                "since its creation, as the change feed saw it)")

    # A name of several links was linked in: the feed's "created" is no writer's.
    outside = spool.layout.root / "outside"
    outside.write_bytes(b"")
    os.link(outside, spool.layout.folder(P) / "linked.json")
    assert intake.inspect("linked.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S)
    quarantined(spool, intake.inspect("linked.json"), "linked.json", "hard link")


@pytest.mark.usefixtures("sigio_ignored")
def test_a_lease_granted_outweighs_the_change_feed(spool: Spool, intake: Intake,
                                                   clock: FakeClock) -> None:
    """The processor's own file, leased: nobody writes it, whatever the feed last saw."""
    intake.being_written = lambda name, inode: True
    drop_raw(spool.layout, "closed.json", b'{"tool": ')
    assert intake.inspect("closed.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S)
    quarantined(spool, intake.inspect("closed.json"), "closed.json", "malformed JSON")


def test_a_process_that_sigio_would_end_takes_no_lease(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    """The lease-break signal's default is to end the process: a library user that has
    not set it (the CLI, a test) quarantines as before, on the settle time alone."""
    assert signal.getsignal(signal.SIGIO) is signal.SIG_DFL
    path = spool.layout.folder(P) / "plain.json"
    with path.open("wb"):
        assert intake.inspect("plain.json").verdict is Verdict.WAITING
        clock.advance(SETTLE_S)
        quarantined(spool, intake.inspect("plain.json"), "plain.json", "empty file")


# -- contents -----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"tool": "\xff\xfe"}', "not UTF-8"),
    (b'{"tool": "echo",', "malformed JSON"),
    (b"", "empty file"),
    (b"   \n", "empty file"),
    (b"\xef\xbb\xbf", "malformed JSON"),
])
def test_unparsable_waits_to_settle(spool: Spool, intake: Intake, clock: FakeClock,
                                    data: bytes, reason: str) -> None:
    drop_raw(spool.layout, "u.json", data)
    assert intake.inspect("u.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S / 2)
    assert intake.inspect("u.json").verdict is Verdict.WAITING
    assert locate(spool.layout, "u") == [P]
    clock.advance(SETTLE_S / 2)
    quarantined_file(spool, intake.inspect("u.json"), "u.json", reason, data)


def test_settle_restarts_when_the_file_changes(spool: Spool, intake: Intake,
                                               clock: FakeClock) -> None:
    path = drop_raw(spool.layout, "grow.json", b'{"tool": ')
    assert intake.inspect("grow.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.9)
    path.write_bytes(b'{"tool": "echo", "par')  # still being written: size changed
    assert intake.inspect("grow.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.9)
    assert intake.inspect("grow.json").verdict is Verdict.WAITING
    path.write_bytes(b'{"tool": "echo", "params": {}}')
    insp = intake.inspect("grow.json")
    assert insp.verdict is Verdict.READY and insp.candidate is not None
    assert insp.candidate.job.tool == "echo" and insp.candidate.job_id == "grow"
    assert locate(spool.layout, "grow") == [P]


def test_settle_restarts_when_a_rewrite_in_place_keeps_the_size(
        spool: Spool, intake: Intake, clock: FakeClock) -> None:
    """An unparsable file waits until its size *and* mtime have been unchanged for
    SPOOL_SETTLE_S (DESIGN section 9): a writer that rewrites it in place at the same
    size (a fixed-width export, a preallocated file) restarts the wait by its mtime."""
    path = drop_raw(spool.layout, "same.json", b'{"tool": "ec')
    first = os.stat(path).st_mtime_ns
    assert intake.inspect("same.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.9)
    path.write_bytes(b'{"tool": "xx')  # the same size, written again
    os.utime(path, ns=(first + 10**9, first + 10**9))  # a later tick, on any filesystem
    assert intake.inspect("same.json").verdict is Verdict.WAITING
    clock.advance(SETTLE_S * 0.9)  # past the settle time since first seen, not since changed
    assert intake.inspect("same.json").verdict is Verdict.WAITING
    assert listing(spool.layout.folder(F)) == []
    clock.advance(SETTLE_S * 0.1)
    insp = intake.inspect("same.json")
    assert insp.verdict is Verdict.QUARANTINED and insp.record is not None
    assert spool.layout.original("same").read_bytes() == b'{"tool": "xx'


@pytest.mark.parametrize(("data", "reason", "tool"), [
    (b"[1, 2, 3]", "JSON object, not list", None),
    (b'"a string"', "JSON object, not str", None),
    (b"null", "JSON object, not NoneType", None),
    (b'{"tool": 5}', "tool: Input should be a valid string", None),
    # A name no tool can have is not kept: 1 MiB ones bloated the stats and ls (QA).
    (b'{"tool": "' + b"t" * 129 + b'"}', "at most 128 characters", None),
    (b'{"params": {}}', "tool: Field required", None),
    (b'{"tool": "echo", "priority": "high"}', "priority:", "echo"),
    # Numbers as the schema says: lax, true was 1 (a 1 s timeout) and "7" was 7 (QA).
    (b'{"tool": "echo", "timeout": true}', "timeout: must be a number, not true", "echo"),
    (b'{"tool": "echo", "priority": "7"}', 'priority: must be a number, not "7"', "echo"),
    # Said "Unable to parse input string as an integer" of a number (QA).
    (b'{"tool": "echo", "priority": 1e308}',
     "priority: Input should be a valid integer, and 1e+308 is out of range", "echo"),
    (b'{"tool": "echo", "max_attempts": true}', "max_attempts: must be a number", "echo"),
    (b'{"tool": "echo", "attempts": "1"}', "attempts: must be a number", "echo"),
    (b'{"tool": "echo", "params": [1]}', "params:", "echo"),
    (b'{"tool": "echo", "bogus": 1}', "bogus: Extra inputs are not permitted", "echo"),
    (b'{"tool": "echo", "not_before": "2026-01-01T00:00:00"}', "UTC offset", "echo"),
    (b'{"tool": "echo", "not_before": "9999-12-31T23:59:59-01:00"}', "out of range", "echo"),
    (b'{"tool": "echo", "submitted_at": "0001-01-01T00:00:00+01:00"}', "out of range", "echo"),
    (b'{"tool": "echo", "id": "someone-else"}', "id mismatch", "echo"),
    (b'{"tool": "echo", "id": "bad id!"}', "id:", "echo"),
])
def test_invalid_jobs_quarantined_at_once(spool: Spool, intake: Intake, data: bytes,
                                          reason: str, tool: str | None) -> None:
    drop_raw(spool.layout, "v.json", data)
    job_id = quarantined_file(spool, intake.inspect("v.json"), "v.json", reason, data)
    assert job_id == "v"
    assert read_json(spool.layout.job(F, "v")).get("tool") == tool


@pytest.mark.parametrize("depth", [200, 201])
def test_a_drop_is_nested_at_most_200_levels_deep(spool: Spool, intake: Intake,
                                                  depth: int) -> None:
    """The job object is a level: its params add the rest, in lists and objects.  (The
    depth is asked of orjson's encoder since a walk of a wide 1 MB job took 70 ms of the
    loop, QA.)"""
    inner = b"[" * (depth - 3) + b"]" * (depth - 3)
    data = b'{"tool": "echo", "params": {"a": [' + inner + b"]}}"
    drop_raw(spool.layout, "deep.json", data)
    seen = intake.inspect("deep.json")
    if depth == 200:
        assert seen.verdict is Verdict.READY
    else:
        quarantined_file(spool, seen, "deep.json", "nested more than 200 levels deep", data)


def test_a_bad_drop_of_a_running_id_waits_for_the_run(spool: Spool, intake: Intake) -> None:
    """Judged during the run, its failed record would stand beside the running job, and
    the run's record would erase it: it waits in pending/ until the run ends."""
    submit(spool, "busy")
    claim = spool.claim("busy")
    assert claim is not None
    try:
        drop_raw(spool.layout, "busy.json", b'{"tool": "echo", "bogus": 1}')
        assert intake.inspect("busy.json").verdict is Verdict.WAITING
        assert sorted(locate(spool.layout, "busy")) == sorted([P, R])
        spool.complete(claim, done_record(claim, "ran"))
    finally:
        claim.close()
    quarantined_file(spool, intake.inspect("busy.json"), "busy.json", "bogus",
                     b'{"tool": "echo", "bogus": 1}')
    assert locate(spool.layout, "busy") == [F]


def test_bom_prefixed_job_accepted(spool: Spool, intake: Intake) -> None:
    drop_raw(spool.layout, "bom.json", b"\xef\xbb\xbf" + VALID)
    insp = intake.inspect("bom.json")
    assert insp.verdict is Verdict.READY and insp.candidate is not None
    assert insp.candidate.job.params == {"message": "hi"}
    assert locate(spool.layout, "bom") == [P]


def test_matching_id_and_valid_job_ready(spool: Spool, intake: Intake) -> None:
    data = b'{"tool": "echo", "id": "ok-1", "priority": 7, "meta": {"a": [1]}}'
    path = drop_raw(spool.layout, "ok-1.json", data)
    insp = intake.inspect("ok-1.json")
    assert insp.verdict is Verdict.READY and insp.candidate is not None
    assert insp.candidate.job.priority == 7 and insp.candidate.size == len(data)
    assert insp.candidate.inode == (os.stat(path).st_ino, os.stat(path).st_dev)
    assert path.read_bytes() == data


# -- property: arbitrary bytes never raise ------------------------------------------------

_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _containers(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A def, not a lambda: hypothesis 6.15x reads a lambda's source to see that it uses
    # its argument, and a lambda over several lines can read as one that does not (a
    # deprecation warning, an error here).
    return st.one_of(st.lists(kids, max_size=4),
                     st.dictionaries(st.text(max_size=8), kids, max_size=4))


_json_values = st.recursive(
    st.none() | st.booleans() | _ints | st.floats(allow_nan=False) | st.text(), _containers,
    max_leaves=12)
_job_like = st.fixed_dictionaries(
    {"tool": st.one_of(st.text(max_size=10), _ints)},
    optional={"params": _json_values, "priority": _json_values, "id": st.text(max_size=12),
              "timeout": _json_values, "not_before": _json_values, "meta": _json_values,
              "max_attempts": _json_values, "junk": _json_values})


def _encode(doc: Any) -> bytes:
    return orjson.dumps(doc)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=MAX_BYTES + 64),
                      _json_values.map(_encode), _job_like.map(_encode)),
       settle=st.sampled_from([0.0, SETTLE_S]))
def test_arbitrary_bytes_never_raise(spool: Spool, clock: FakeClock, data: bytes,
                                     settle: float) -> None:
    intake = Intake(spool, max_job_bytes=MAX_BYTES, settle_s=settle, clock=clock)
    name = f"h{next(_names)}.json"
    drop_raw(spool.layout, name, data)
    insp = intake.inspect(name)
    assert insp.verdict in {Verdict.READY, Verdict.WAITING, Verdict.QUARANTINED}
    if insp.verdict is Verdict.QUARANTINED:
        assert insp.record is not None
        assert spool.layout.original(insp.record.id).read_bytes() == data
    else:
        assert (spool.layout.folder(P) / name).read_bytes() == data
    if insp.verdict is Verdict.WAITING:
        clock.advance(settle)
        assert intake.inspect(name).verdict is Verdict.QUARANTINED


_names = itertools.count()


def test_a_second_bad_drop_of_an_id_keeps_the_first_original(spool: Spool,
                                                            intake: Intake) -> None:
    drop_raw(spool.layout, "twice.json", b"[1]")
    first = quarantined_file(spool, intake.inspect("twice.json"), "twice.json", "JSON object",
                             b"[1]")
    drop_raw(spool.layout, "twice.json", b'{"tool": 5}')
    second = quarantined_file(spool, intake.inspect("twice.json"), "twice.json",
                              "earlier quarantined", b'{"tool": 5}')
    assert first == "twice" and second.startswith("invalid-")
    assert spool.layout.original("twice").read_bytes() == b"[1]"


def test_a_drop_replaced_after_it_was_judged_goes_back_to_be_judged_afresh(
        spool: Spool, intake: Intake) -> None:
    """Intake judged a drop no job; before its quarantine moved it, the client renamed a
    valid job over the name.  The quarantine moves what it finds, sees another inode than
    the one judged, and puts it back: the valid job is never failed with the reason of
    the file it replaced, nor its bytes kept as that file's original."""
    layout = spool.layout
    path = drop_raw(layout, "swap.json", b"[1, 2, 3]")
    judged = os.lstat(path)
    staged = layout.tmp / "swap.newer"
    staged.write_bytes(VALID)
    os.rename(staged, path)  # the safe drop of a newer file, after intake looked

    record = spool.quarantine("swap.json", "invalid job: the file must hold a JSON object",
                              kind="file", size=judged.st_size, mtime_ns=judged.st_mtime_ns,
                              inode=(judged.st_ino, judged.st_dev))
    assert record is None
    assert path.read_bytes() == VALID
    assert listing(layout.folder(F)) == [] and listing(layout.tmp) == []
    assert intake.inspect("swap.json").verdict is Verdict.READY


def test_an_unreadable_drop_is_quarantined_not_ignored(spool: Spool, intake: Intake,
                                                       clock: FakeClock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Once it has stayed unreadable for the settle time: a writer may set its mode
    after writing it (tests/reliability/test_unreadable_drops.py)."""
    drop_raw(spool.layout, "locked.json", VALID)

    def denied(path: Any) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("spool.intake.open_nofollow", denied)  # root reads mode 000 anyway
    quarantined_file(spool, settled(intake, clock, "locked.json"), "locked.json",
                     "permission denied", VALID)
