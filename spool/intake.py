"""Judging what lands in ``pending/``: ignore, wait, quarantine, or a ready job.

Rules (DESIGN sections 2 and 9), checked in this order without ever following
a symlink or opening a FIFO, socket or device:

1. names starting with ``.`` or ending in ``.tmp .part .partial .filepart
   .crdownload ~`` are in progress: ignored until renamed;
2. symlinks, directories, FIFOs, sockets and devices are quarantined by
   rename (their targets are never touched);
3. a bad name (not ``<id>.json``), a hard link (once its size and mtime have been
   unchanged for ``SPOOL_SETTLE_S``: a no-clobber drop links, then unlinks), or a
   file too large to pass even forgiven what a requeue adds (``Intake.read_limit``)
   is quarantined without being read; one over
   ``SPOOL_MAX_JOB_BYTES`` is quarantined as too large unless it is a job whose
   fields other than those a requeue adds (``REQUEUE_FIELDS``) fit the limit and
   those fields no more than a requeue writes (``REQUEUE_ADDS_BYTES``): a retry of
   a job near the limit is the spool's own file, not a bigger drop;
4. a file that is not UTF-8 JSON waits until its size and mtime have been
   unchanged for ``SPOOL_SETTLE_S`` as seen here, then is quarantined;
5. valid JSON that is not a valid job (or whose ``id`` differs from its
   name, or that holds an integer past 64 bits, see :func:`spool.exact.inexact_integer`)
   is quarantined at once;
6. anything else is a :class:`Candidate` ready to be claimed.

What would be quarantined waits instead while its id is running: a drop of a
running id stays in ``pending/`` until that run ends.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from spool.clock import Clock
from spool.errors import QuarantineRefused, SpoolIOError, UnreadableDrop
from spool.exact import big_integer_reason, inexact_integer
from spool.fsops import failing_file, failing_read, is_there, no_access
from spool.history import EARLIER_MAX_BYTES
from spool.ids import ID_PATTERN, id_from_name
from spool.in_progress import is_in_progress_name
from spool.jobfile import MAX_ACTIVE_BYTES, read_fd
from spool.lease import open_for_writing, open_nofollow
from spool.models import MAX_NESTING, MAX_TOOL_NAME, Job, Record, error_text, kind_of, too_deep
from spool.states import JobState
from spool.text import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, without_bom
from spool.transitions import Spool

OPEN_WRITER_WAIT_S = 600.0
"""How long an unparsable file that a process still has open for writing is waited for
past the settle time (see :meth:`Intake._held_open`)."""
REQUEUE_FIELDS = frozenset({"submitted_at", "attempts", "not_before", "error", "id"})
"""What a requeue adds to a job file: not counted against SPOOL_MAX_JOB_BYTES, up to
``REQUEUE_ADDS_BYTES``."""
REQUEUE_ADDS_BYTES = 6 * (MAX_MESSAGE_CHARS + MAX_TRACEBACK_CHARS) + EARLIER_MAX_BYTES + 1024
"""The most a requeue adds: the run's error at its longest (the processor cuts its
message and traceback to those lengths), each character 6 bytes in JSON at worst (a
control character, ``\\u0001``), the earlier failures it carries at their most
(:data:`spool.history.EARLIER_MAX_BYTES`), and the other fields (the id 128
characters, two timestamps, the attempts) well within 1 KiB.  A drop that carries
more in those fields is measured whole: a forged ``error`` is no way past the limit."""
KEEP_BYTES = 4096
"""A candidate keeps the bytes it was judged on up to this size (see ``Candidate.data``)."""


class Verdict(Enum):
    IGNORED = "ignored"
    WAITING = "waiting"
    WRITING = "writing"  # settled, but open for writing (Intake._held_open): judged later
    QUARANTINED = "quarantined"
    READY = "ready"
    GONE = "gone"
    HELD = "held"  # no job, but quarantines are paused (one was refused): judged later
    LARGE = "large"  # a regular file over ``defer_over``, unread: judged when asked again


def _came_when_it_came(fd: int, st: os.stat_result) -> os.stat_result:
    """A drop whose mtime is ahead of when it came into ``pending/`` (its ctime: a copy
    that kept a future mtime, ``cp -p``, ``rsync -t``, a client's clock ahead) is given
    that time as its mtime, the file's time a record's ``submitted_at`` is when the job
    names none: its records said it was submitted after it finished, and ``ls`` listed
    it above every job dropped until then (QA).  Its fstat after; as it was when this
    user may not change it (a submitter's drop in a shared spool)."""
    try:
        os.utime(fd, ns=(st.st_atime_ns, st.st_ctime_ns))
        return os.fstat(fd)
    except OSError:
        return st


FUTURE_SLACK_NS = 20_000_000
"""How far a drop's submission time may be past its file's ctime and still order it
(:attr:`Candidate.submitted_ns`): two ticks of the kernel's coarse clock at 100 Hz, far
less than the clock skew or copied mtime the clamp is for.  It was 1 s: a client's
clock 0.5 s ahead had its job run after every job of its priority dropped in that half
second (QA h337: 29 of a burst of 40)."""
COARSE_SLACK_NS = 1_000_000_000
"""The slack where the file's ctime is a whole second (a filesystem keeping whole
seconds: ext3, some NFS servers): ``submitted_at`` may be up to a second past it."""


@dataclass(slots=True, eq=False)
class Candidate:
    """A valid job file in ``pending/``, as read at inspection; what it says never changes
    once made (:meth:`shed` lets go of a parsed form of it only).  Not frozen: a frozen
    dataclass sets each field through ``object.__setattr__``, which made building one
    three times as costly, once per drop on the processor's loop."""

    job_id: str
    _job: Job | None
    """The job intake judged; None once :meth:`shed` (``data`` then holds it)."""
    size: int
    mtime_ns: int
    inode: tuple[int, int]
    ctime_ns: int
    """When the file came into ``pending/`` (the rename sets it) or was last written."""
    data: bytes | None = None
    """The file's bytes when small: a claim that reads the same bytes reuses ``job``."""
    settles_at: float = 0.0
    """Not claimed before this (wall-clock seconds): a file written in place is left to
    its writer a moment after its close (:meth:`spool.feed.PolledFeed.settling_s`)."""

    @property
    def job(self) -> Job:
        """The job intake judged: the one it made, or, once shed, made again from the
        bytes it was judged on, as intake made it."""
        if self._job is not None:
            return self._job
        assert self.data is not None, "only a candidate that keeps its bytes is shed"
        return Job.model_validate(orjson.loads(without_bom(self.data)))

    def shed(self) -> None:
        """Let go of the parsed job while the bytes it came from are kept: a million
        ready drops held 2 GB in one processor, about half of it their ``Job`` models
        (QA).  :attr:`job` reads the bytes again when it is asked for."""
        if self.data is not None:
            self._job = None

    @property
    def submitted_ns(self) -> int:
        """Its place in the submission order: its ``submitted_at`` (the file's mtime when
        the job names none), but never later than the file came: a copy that kept a
        mtime in the future (``cp -p``, ``rsync -t``, a client's clock ahead) waited
        behind every job dropped until that time, a day on a spool with a backlog (QA)."""
        if self.job.submitted_at is not None:
            submitted = int(self.job.submitted_at.timestamp() * 1e9)
        else:
            submitted = self.mtime_ns
        # Only a time past the file's coming by more than the kernel's timestamp tick is
        # "later than it came": a file's ctime is the kernel's coarse clock (a tick of 1
        # to 10 ms, behind the fine clock ``submitted_at`` is read from), so the plain
        # min took the ctime of nearly every drop, and the jobs of one tick ran in id
        # order, not in the submission order their records show (QA h332).
        slack = COARSE_SLACK_NS if self.ctime_ns % 1_000_000_000 == 0 else FUTURE_SLACK_NS
        if submitted > self.ctime_ns + slack:
            return self.ctime_ns
        return submitted


@dataclass(slots=True, eq=False)
class Inspection:
    """What :meth:`Intake.inspect` made of a name (never changed, as a Candidate)."""

    verdict: Verdict
    candidate: Candidate | None = None
    record: Record | None = None


class Intake:
    """Inspects ``pending/`` entries; remembers unparsable files while they settle."""

    def __init__(self, spool: Spool, *, max_job_bytes: int, settle_s: float,
                 clock: Clock) -> None:
        self.spool = spool
        self.max_job_bytes = max_job_bytes
        # Past this a file cannot pass, even forgiven a requeue's fields (see
        # _fits_but_for_requeue): judged by its size, unread.  A 16 MiB drop was read
        # and parsed on the processor's loop, about 3.7 s each, timeouts held up.
        self.read_limit = min(MAX_ACTIVE_BYTES, max_job_bytes + REQUEUE_ADDS_BYTES + 1024)
        self.settle_s = settle_s
        self.clock = clock
        self._unsettled: dict[str, tuple[int, int, float]] = {}
        self._may_quarantine = True  # this inspect's: see inspect
        self.being_written: Callable[[str, int], bool] = not_seen_written
        """Whether a pending name (of an inode) is still being written by the process
        that created it, as a change feed saw it
        (:meth:`spool.feed.PolledFeed.being_written`); asked of a file whose read lease
        cannot tell (see :meth:`_held_open`)."""

    def inspect(self, name: str, *, quarantine: bool = True,
                defer_over: int | None = None) -> Inspection:
        """What ``name`` in ``pending/`` is; ``quarantine=False`` (quarantines paused, as
        the spool refused one): a drop that is no job is left there, :attr:`Verdict.HELD`.
        ``defer_over``: a file that could be a job but is larger is left unread,
        :attr:`Verdict.LARGE` (its read and parse take about 20 ms a MB)."""
        self._may_quarantine = quarantine
        if is_in_progress_name(name):
            return Inspection(Verdict.IGNORED)
        path = self.spool.layout.entry_str(JobState.PENDING, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._unsettled.pop(name, None)
            return Inspection(Verdict.GONE)
        except OSError as exc:  # EIO: its trouble, as a scan's look-up of it (discovery);
            # ESTALE, ENOMEM: spool trouble, waited out, as the open's.  Out of the loop,
            # either crashed the processor (a traceback, exit 1).
            what = f"cannot look up {name}"
            if (trouble := failing_file(exc, what) or failing_read(exc, what)
                    or no_access(exc, what)) is None:
                raise
            raise trouble from exc
        kind = kind_of(st.st_mode)
        job_id = id_from_name(name)
        problem = self._unreadable_reason(job_id, st, kind)
        if problem is not None:
            # A bad name or a second link may be a writer's, for a moment, and a folder
            # may still be filling (tar -x, cp -r): see _refused.
            may_change = kind == "directory" or (
                kind == "file" and (job_id is None or st.st_nlink > 1))
            return self._refused(name, st, kind, problem, may_change)
        assert job_id is not None
        if defer_over is not None and st.st_size > defer_over:
            return Inspection(Verdict.LARGE)
        return self._read_and_judge(name, job_id, path, st)

    def _refused(self, name: str, st: os.stat_result, kind: str, problem: str,
                 may_change: bool) -> Inspection:
        """A drop that can be no job as it is: quarantined, or (``may_change``) left to its
        writer until it has stayed unchanged for the settle time."""
        if may_change and self._settling(name, st):
            # A no-clobber drop links its staged file in, then unlinks the staged name:
            # spoolq's own publish where the filesystem has no RENAME_NOREPLACE (NFS,
            # CIFS, FUSE), a maildir-style writer.  Quarantined in between, the job a
            # client was told was submitted failed 'hard link', never run.  And a
            # writer's own temporary file (sed -i, NamedTemporaryFile then os.replace,
            # an editor's save) is renamed to its job's name a moment later, or a bad
            # name is still being written: taken at once, the writer's rename failed and
            # the record's size was not the bytes kept (QA).  A folder quarantined while
            # tar -x or cp -r filled it was quarantined again and again, in parts, and
            # the files the tool then failed to write were in no part (QA).
            return Inspection(Verdict.WAITING)
        if may_change and _writer_waits(self._held_open(name, st)):
            return Inspection(Verdict.WRITING)
        self._unsettled.pop(name, None)
        return self._quarantine(name, st, kind, problem)

    def _unreadable_reason(self, job_id: str | None, st: os.stat_result, kind: str
                           ) -> str | None:
        if kind == "symlink":
            return "symlink (never followed): drop the file itself"
        if kind != "file":
            return f"not a regular file: {kind}"
        if job_id is None:
            return f"bad file name: must be <id>.json with id matching {ID_PATTERN}"
        if st.st_nlink > 1:
            return f"hard link ({st.st_nlink} links): drop a file of its own"
        if st.st_size > self.read_limit:
            return self._too_large(st.st_size)
        return None

    def _too_large(self, size: int) -> str:
        return f"too large: {size} bytes is over SPOOL_MAX_JOB_BYTES={self.max_job_bytes}"

    def _read_and_judge(self, name: str, job_id: str, path: str, st: os.stat_result
                        ) -> Inspection:
        try:
            fd = open_nofollow(path)
        except PermissionError:
            # Waited for as an unparsable file is: mv from another filesystem, cp -p and
            # install create the file 0600 and set its mode once it is written, and a
            # look in between failed half such drops, the writer told all was well (QA).
            return self._refused(name, st, "file", "unreadable: permission denied (the "
                                 "processor's user must be able to read dropped files)",
                                 may_change=True)
        except OSError as exc:
            # EIO (a bad sector under its inode) is this file's trouble, as its read's:
            # taken for the spool's, it paused every claim for as long as it lasted.
            if (bad := failing_file(exc, f"cannot read {name}")) is not None:
                raise bad from exc
            # Out of descriptors (or the kernel failing), the file is there all the same:
            # spool trouble, and the name is judged once it passes, not forgotten until
            # the next periodic scan.
            if (trouble := failing_read(exc, f"cannot read {name}")) is not None:
                raise trouble from exc
            return Inspection(Verdict.GONE)  # replaced meanwhile: judged on the next pass
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
                return Inspection(Verdict.GONE)
            if fst.st_mtime_ns > fst.st_ctime_ns:
                fst = _came_when_it_came(fd, fst)
            data = read_fd(fd, self.read_limit, fst.st_size)
        except OSError as exc:  # EIO: an exception out of the loop crashed the processor
            raise UnreadableDrop(f"cannot read {name}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        if len(data) > self.read_limit:  # it grew past it since the lstat
            return self._quarantine(name, fst, "file", f"too large: over SPOOL_MAX_JOB_BYTES="
                                    f"{self.max_job_bytes}")
        try:
            obj = orjson.loads(without_bom(data))
        except orjson.JSONDecodeError as exc:
            return self._unsettled_or_quarantine(name, fst, data, exc)
        self._unsettled.pop(name, None)
        return self._judge_json(name, job_id, fst, obj, data)

    def _unsettled_or_quarantine(self, name: str, st: os.stat_result, data: bytes,
                                 exc: orjson.JSONDecodeError) -> Inspection:
        if len(data) > self.max_job_bytes:  # no job, even once it is whole
            self._unsettled.pop(name, None)
            return self._quarantine(name, st, "file", self._too_large(len(data)))
        if (big := inexact_integer(data)) is not None:
            # Whole JSON all the same (orjson reads an integer of 310 digits or more as
            # "number is infinity"): no writer is still at it, and the reason is known.
            self._unsettled.pop(name, None)
            return self._quarantine(name, st, "file", f"invalid job: {big_integer_reason(big)}")
        if self._settling(name, st):
            return Inspection(Verdict.WAITING)
        held = self._held_open(name, st)
        if _writer_waits(held):
            return Inspection(Verdict.WRITING)
        reason = malformed_reason(data, exc)
        if held is not None:
            reason += f" (unchanged for {OPEN_WRITER_WAIT_S:.0f} s, {held.how})"
        self._unsettled.pop(name, None)
        return self._quarantine(name, st, "file", reason)

    def _settling(self, name: str, st: os.stat_result) -> bool:
        """Whether ``name`` (seen as ``st``) has yet to stay unchanged, its size and mtime,
        for ``settle_s`` as seen here; a change starts the wait again."""
        key = (st.st_size, st.st_mtime_ns)
        now = self.clock.monotonic()
        seen = self._unsettled.get(name)
        if seen is None or seen[:2] != key:
            self._unsettled[name] = (*key, now)
            return self.settle_s > 0
        return now - seen[2] < self.settle_s

    def _held_open(self, name: str, st: os.stat_result) -> Held | None:
        """How long ``name``, settled (:meth:`_settling`), has stayed unchanged, and how it
        is known to be held, when it is a regular file a process still has open for
        writing (:func:`~spool.lease.open_for_writing`); else None.  Such a file waits
        up to :data:`OPEN_WRITER_WAIT_S` (:func:`_writer_waits`): a writer that created
        its file and then waited on its source (``wget -O``, a shell's ``{ sleep 3;
        cat; } >``) had the job failed "empty file", and went on writing into the
        quarantine, told all was well (QA).  Where the lease cannot tell (another user's
        file to a processor without CAP_LEASE), :attr:`being_written` is asked."""
        seen = self._unsettled.get(name)
        if seen is None or not stat.S_ISREG(st.st_mode):
            return None
        held = open_for_writing(self.spool.layout.entry_str(JobState.PENDING, name),
                                st.st_ino)
        how = HELD_OPEN
        if held is None and st.st_nlink == 1:
            # No lease for this process (another user's file, under the shipped units'
            # user without CAP_LEASE): what the change feed saw of its creation.  A file
            # of several links was linked in, not written here.  (Nor was one linked in
            # whose other name went since, a no-clobber drop's link then unlink: the
            # feed cannot tell, and it waits; but a writer's fchown or fchmod changes
            # the file as a link does, and a ctime past the mtime failed such a writer.)
            held, how = self.being_written(name, st.st_ino), HELD_UNCLOSED
        return Held(self.clock.monotonic() - seen[2], how) if held else None

    def _judge_json(self, name: str, job_id: str, st: os.stat_result, obj: Any,
                    data: bytes) -> Inspection:
        if not isinstance(obj, dict):
            return self._quarantine(name, st, "file", "invalid job: the file must hold a JSON "
                                    f"object, not {type(obj).__name__}")
        # A name no tool can have is not kept: 1 MiB "tool"s in records made the stats'
        # list of seen names 20 MB, and each row of `spoolq ls` as wide (QA).
        tool = obj.get("tool")
        if not isinstance(tool, str) or len(tool) > MAX_TOOL_NAME:
            tool = None
        reason = None
        if too_deep(data, obj):
            reason = f"invalid job: nested more than {MAX_NESTING} levels deep"
        elif len(data) > self.max_job_bytes and not self._fits_but_for_requeue(obj, len(data)):
            reason = self._too_large(len(data))
        elif (big := inexact_integer(data)) is not None:
            reason = f"invalid job: {big_integer_reason(big)}"
        if reason is not None:
            return self._quarantine(name, st, "file", reason, tool=tool)
        try:
            job = Job.model_validate(obj)
        except ValidationError as exc:
            return self._quarantine(name, st, "file", validation_reason(exc), tool=tool)
        if job.id is not None and job.id != job_id:
            return self._quarantine(name, st, "file", f"id mismatch: the file says {job.id!r} "
                                    f"but is named {job_id!r}", tool=tool)
        return Inspection(Verdict.READY, Candidate(
            job_id, job, st.st_size, st.st_mtime_ns, (st.st_ino, st.st_dev), st.st_ctime_ns,
            data if len(data) <= KEEP_BYTES else None))

    def _fits_but_for_requeue(self, obj: dict[str, Any], size: int) -> bool:
        """``obj``, read from a file of ``size`` bytes, is a job that fits
        SPOOL_MAX_JOB_BYTES without the fields a requeue adds (a retry, a recovery or a
        stop's requeue of a job near the limit).  Only those fields' bytes, as a requeue
        writes them (compact), are taken off the file's size: what the parse threw away
        (whitespace, a key given twice) still counts, as DESIGN's limit is on the file."""
        sent = {k: v for k, v in obj.items() if k not in REQUEUE_FIELDS
                and (k, v) not in (("priority", 0), ("params", {}))}  # a requeue adds these
        added = {k: v for k, v in obj.items() if k in REQUEUE_FIELDS}
        try:
            Job.model_validate(sent)
            forgiven = len(orjson.dumps(obj)) - len(orjson.dumps(sent))
            return (size - forgiven <= self.max_job_bytes
                    and len(orjson.dumps(added)) <= REQUEUE_ADDS_BYTES)
        except (ValidationError, TypeError):  # TypeError: orjson cannot write it
            return False

    def _quarantine(self, name: str, st: os.stat_result, kind: str, message: str,
                    tool: str | None = None) -> Inspection:
        job_id = id_from_name(name)
        if job_id is not None and is_there(
                self.spool.layout.job_str(JobState.RUNNING, job_id),
                f"cannot look up running/{job_id}.json"):
            # A drop of a running id stays in pending/ until that run ends (DESIGN section
            # 9), bad or not: judged now, its failed record would stand beside the run,
            # and the run's own record would then erase it with its original.  A run the
            # disk cannot look up (EIO) is not taken for none (os.path.lexists did).
            return Inspection(Verdict.WAITING)
        if not self._may_quarantine:
            return Inspection(Verdict.HELD)
        self._unsettled.pop(name, None)
        try:
            record = self.spool.quarantine(
                name, message, kind=kind, size=st.st_size if kind == "file" else None,
                mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev), tool=tool)
        except UnreadableDrop:
            raise  # the drop's own trouble (EIO), as its read's
        except SpoolIOError as exc:  # that drop's trouble: judged again after a pause
            raise QuarantineRefused(str(exc)) from exc
        return Inspection(Verdict.QUARANTINED if record else Verdict.GONE, record=record)

    def forget(self, names: set[str]) -> None:
        """Drop settle state for names no longer in ``pending/``."""
        for name in set(self._unsettled) - names:
            del self._unsettled[name]


def not_seen_written(name: str, inode: int) -> bool:
    """:attr:`Intake.being_written` with no feed to tell: no file is known to be written."""
    return False


class Held(NamedTuple):
    """A file held open for writing (:meth:`Intake._held_open`): for how long unchanged,
    and how that is known (as a quarantine's message says it)."""

    for_s: float
    how: str


HELD_OPEN = "still open for writing"
HELD_UNCLOSED = "not closed after writing since its creation, as the change feed saw it"


def _writer_waits(held: Held | None) -> bool:
    """A file held open for writing (None: not held) waits on, up to its limit."""
    return held is not None and held.for_s < OPEN_WRITER_WAIT_S


def malformed_reason(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why ``data``, a job's bytes as written (a UTF-8 byte order mark first kept: a bad
    byte's offset is then the file's), is no JSON."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return f"not UTF-8: invalid byte at offset {uexc.start}{_utf16_hint(data)}"
    if not without_bom(data).strip():
        return "malformed JSON: empty file"
    return f"malformed JSON: {exc}{_utf16_hint(data)}"


UTF16_HINT = ("; it looks like UTF-16, as Windows PowerShell's Out-File and > write: a "
              "job is UTF-8 JSON (Out-File -Encoding utf8)")
"""Said of a job written in UTF-16: only "not UTF-8: invalid byte at offset 0", or, with
no byte order mark, orjson's words for its NUL bytes, left an integrator on Windows
guessing (QA h401)."""


def _utf16_hint(data: bytes) -> str:
    """:data:`UTF16_HINT` when ``data`` reads as UTF-16 text beginning with ``{`` or ``[``
    and an ASCII character (after its byte order mark and blanks), either byte order;
    else nothing.  A test of
    the first bytes alone (a BOM, or an ASCII byte and a NUL, twice) also said it of
    UTF-32 (whose little-endian BOM begins as UTF-16's) and of a latin-1 file beginning
    "ÿþ" (h407)."""
    sample = data[:256]
    sample = sample[:len(sample) - len(sample) % 2]
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                       (b"", "utf-16-le"), (b"", "utf-16-be")):
        if sample.startswith(bom):
            text = sample[len(bom):].decode(codec, errors="replace").lstrip(" \t\r\n")
            if text[:1] in ("{", "[") and all(0 < ord(char) < 0x80 for char in text[1:2]):
                return UTF16_HINT
    return ""


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "job"
        parts.append(f"{where}: {error_text(err)}")
    return "invalid job: " + "; ".join(parts)
