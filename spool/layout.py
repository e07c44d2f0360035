"""Every path under the spool, computed in one place.

::

    $SPOOL_DIR/
      pending/   the drop folder          running/  claimed jobs
      done/      finished records         failed/   failed records, <id>.orig originals
      tmp/       staging for atomic writes (same filesystem)
      stage/     a processor's private staging: spare inodes, records being written
                 (optional: a spool made before it has none, and tmp/ serves instead)
      progress/  <id>.json: owner and progress of a running job (advisory)
      cancel/    <id>: a request to cancel a running job
      owners/    <owner>.lock (flock held while alive), <owner>.json (status)
      offers/    <key>: an empty file per tool, its mtime when a processor last
                 offered it (optional: a spool made before it has none until a
                 processor makes it; spool.offer_marks)

No other module joins spool paths.  Ids are validated before a path is built.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from spool.errors import InvalidId, NotASpool, SpoolIOError
from spool.ids import ID_RE, JOB_SUFFIX
from spool.states import JobState

ORIG_SUFFIX = ".orig"
KEPT_TAG = ".kept-"
"""Marks ``.<name>.kept-<id>``: a directory spoolq could neither move out of its folder
nor remove (another user's, see :meth:`Layout.kept_str`), renamed within it.  The
leading dot hides it from intake and every reader; failed record ``<id>`` says what it
was and where it stood."""
PATH_MAX = 4096
"""Linux's limit on a path given to a system call, in bytes with its final NUL."""
NAME_MAX = 255
MAX_ROOT_BYTES = PATH_MAX - 1 - len("/progress/") - NAME_MAX
"""The longest spool root (absolute, in bytes) under which any name a folder may hold
(a client's drop: up to NAME_MAX bytes) can still be named: 3,830 bytes."""
_KEPT_NAME_BYTES = 200
"""The most of the old name a kept name keeps: with the dot, the tag and an invalid id
(31 characters) it stays within NAME_MAX (255 bytes)."""


FOLDER_NAMES = (*[s.value for s in JobState], "tmp", "stage", "progress", "cancel", "owners",
                "offers")
"""Every folder of a spool, by name."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The folders of one spool rooted at ``root``; reached through ``view`` instead when
    it is given (:func:`spool.view.guarded`: root's view of another user's spool)."""

    root: Path
    view: Path | None = None
    # Joined once: a transition builds about twenty paths, and pathlib's join is
    # a measurable share of it (see docs/benchmarks.md).
    _folders: dict[str, Path] = field(init=False, repr=False, compare=False)
    _dirs: dict[str, str] = field(init=False, repr=False, compare=False)
    _state_dirs: dict[JobState, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = self.root if self.view is None else self.view
        folders = {name: base / name for name in FOLDER_NAMES}
        object.__setattr__(self, "_folders", folders)
        object.__setattr__(self, "_dirs", {name: str(path) for name, path in folders.items()})
        # Keyed by the member itself: an Enum's .value is a Python-level property.
        object.__setattr__(self, "_state_dirs", {s: str(folders[s.value]) for s in JobState})

    @property
    def tmp(self) -> Path:
        return self._folders["tmp"]

    @property
    def stage(self) -> Path:
        """A processor's own staging folder: drops staged in ``tmp/`` by every client
        then never wait on the processor's renames for ``tmp/``'s directory lock."""
        return self._folders["stage"]

    @property
    def progress(self) -> Path:
        return self._folders["progress"]

    @property
    def cancel(self) -> Path:
        return self._folders["cancel"]

    @property
    def owners(self) -> Path:
        return self._folders["owners"]

    @property
    def offers(self) -> Path:
        return self._folders["offers"]

    def folder(self, state: JobState) -> Path:
        return self._folders[state.value]

    def folder_named(self, name: str) -> Path:
        """The folder ``name`` (one of :data:`FOLDER_NAMES`; KeyError if not)."""
        return self._folders[name]

    def all_folders(self) -> list[Path]:
        """Every folder ``spoolq init`` makes."""
        return [*self.required_folders(), self.stage, self.offers]

    def required_folders(self) -> list[Path]:
        """The folders a spool cannot work without (not ``stage/``, which a spool made
        before it lacks: its processor stages in ``tmp/``; nor ``offers/``, which its
        processor makes)."""
        states = [self.folder(s) for s in JobState]
        return [*states, self.tmp, self.progress, self.cancel, self.owners]

    def job(self, state: JobState, job_id: str) -> Path:
        """``<state>/<id>.json`` for a validated id."""
        return Path(self.job_str(state, job_id))

    def entry(self, state: JobState, name: str) -> Path:
        """A raw directory entry of a state folder (for intake of arbitrary names)."""
        return Path(self.entry_str(state, name))

    def entry_str(self, state: JobState, name: str) -> str:
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise ValueError(f"not a plain file name: {name!r}")
        return f"{self._state_dirs[state]}/{name}"

    def original(self, job_id: str) -> Path:
        """``failed/<id>.orig``: the quarantined original of an invalid drop."""
        return Path(self.original_str(job_id))

    def kept_str(self, path: str, record_id: str) -> str:
        """Where what stands at ``path`` is kept in its own folder when spoolq may not move
        it out of it (a directory changes folder only if its mover may write it, for its
        '..'; a rename within the folder needs only the folder): ``.<name>.kept-<id>``,
        ``record_id`` its failed record's."""
        folder, _, name = path.rpartition("/")
        head = os.fsdecode(os.fsencode(name)[:_KEPT_NAME_BYTES])
        return f"{folder}/.{head}{KEPT_TAG}{_checked(record_id)}"

    def progress_file(self, job_id: str) -> Path:
        return Path(self.progress_str(job_id))

    def cancel_request(self, job_id: str) -> Path:
        return Path(self.cancel_str(job_id))

    def owner_lock(self, owner_id: str) -> Path:
        return self.owners / (_checked(owner_id) + ".lock")

    def owner_status(self, owner_id: str) -> Path:
        return self.owners / (_checked(owner_id) + JOB_SUFFIX)

    def offer_str(self, tool: str) -> str:
        """``offers/<key>``, the mark of when ``tool`` was last offered: any name a job
        may give (up to 128 characters, a ``/`` or a lone surrogate among them) keyed
        by a hash, 32 hex digits."""
        key = hashlib.blake2b(tool.encode("utf-8", "surrogatepass"), digest_size=16)
        return f"{self._dirs['offers']}/{key.hexdigest()}"

    def staging(self, tag: str) -> Path:
        """A unique name in ``tmp/`` for one atomic write."""
        return Path(self.staging_str(tag))

    # Plain strings for the per-job path: a claim-and-complete names about ten
    # files, and building ``Path`` objects for them cost a fifth of the
    # processor's time (docs/benchmarks.md).

    def job_str(self, state: JobState, job_id: str) -> str:
        return f"{self._state_dirs[state]}/{_checked(job_id)}{JOB_SUFFIX}"

    def original_str(self, job_id: str) -> str:
        return f"{self._state_dirs[JobState.FAILED]}/{_checked(job_id)}{ORIG_SUFFIX}"

    def progress_str(self, job_id: str) -> str:
        return f"{self._dirs['progress']}/{_checked(job_id)}{JOB_SUFFIX}"

    def cancel_str(self, job_id: str) -> str:
        return f"{self._dirs['cancel']}/{_checked(job_id)}"

    def staging_str(self, tag: str) -> str:
        """A new staging file's path in ``tmp/``, named for this process (see
        :func:`parse_staging`)."""
        return f"{self._dirs['tmp']}/{tag}.{os.getpid()}.{random_part()}.tmp"

    def private_staging_str(self, tag: str) -> str:
        """As :meth:`staging_str`, in ``stage/``."""
        return f"{self._dirs['stage']}/{tag}.{os.getpid()}.{random_part()}.tmp"

    def exists(self) -> bool:
        return all(p.is_dir() for p in self.required_folders())

    def require(self) -> None:
        """Raise SpoolIOError unless every folder of the spool exists (and its path is
        short enough: :meth:`require_short_enough`)."""
        self.require_short_enough()
        self.require_root_is_dir()
        missing = [p for p in self.required_folders() if not p.is_dir()]
        if missing:
            self.require_no_file_in_place(missing)
            raise NotASpool(
                f"{self.root} is not an initialised spool (missing "
                f"{', '.join(p.name for p in missing)}); run {self._init_advice()}",
                self.root)

    def require_root_is_dir(self) -> None:
        """SpoolIOError when the root exists and is no directory ('spoolq init' cannot
        help: it said "Not a directory (<root>/pending)")."""
        try:
            st = os.stat(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return  # none: said by what needs it
        except PermissionError:
            raise  # the caller's "this user may not enter it"
        except OSError as exc:  # a FUSE mount whose daemon died: ENOTCONN (a traceback)
            raise SpoolIOError(f"cannot look at the spool root: {exc.strerror} "
                               f"({self.root})") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolIOError(f"{self.root} is not a directory: the spool root must be one")

    def _init_advice(self) -> str:
        """``spoolq init``, or ``--system`` for a spool of another user's: plain, run as
        root there, it made the missing folders root's, and the next start failed on
        them (QA)."""
        try:
            owner = self.root.stat().st_uid
        except OSError:
            return "'spoolq init'"
        if owner == os.geteuid():
            return "'spoolq init'"
        return (f"'spoolq init --system --user USER --group GROUP' as root (the spool is "
                f"uid {owner}'s)")

    def require_short_enough(self) -> None:
        """SpoolIOError when the root is longer than :data:`MAX_ROOT_BYTES`: a drop with a
        long name (or a staging name with a long id) would then be past PATH_MAX, which
        no daemon could read, quarantine or move (the processor logged an error at each
        scan of ``pending/``, and the jobs stayed there for good)."""
        size = len(os.fsencode(os.path.abspath(self.root)))
        if size > MAX_ROOT_BYTES:
            raise SpoolIOError(
                f"the spool path is {size} bytes long, over {MAX_ROOT_BYTES}: a file "
                f"name of up to {NAME_MAX} bytes in its folders would pass the kernel's "
                f"PATH_MAX ({PATH_MAX} bytes) and could not be read or moved; use a "
                "shorter SPOOL_DIR (a symlink to this one will do)")

    def require_no_file_in_place(self, folders: list[Path]) -> None:
        """SpoolIOError naming the first of ``folders`` whose path holds something else
        than a folder: 'spoolq init' cannot make it there, so it is not all the advice."""
        for folder in folders:
            if folder.exists() and not folder.is_dir():
                raise SpoolIOError(f"{folder} is not a directory: move it out of the way, "
                                   "then run 'spoolq init'")


def is_kept_name(name: str) -> bool:
    """A name :meth:`Layout.kept_str` gave: left alone by every pass (its record says an
    operator must remove it)."""
    return name.startswith(".") and KEPT_TAG in name


class StagingName(NamedTuple):
    """What a staging file's name says (:func:`parse_staging`)."""

    tag: str
    pid: int
    space: str | None
    """The writer's pid space (:func:`pid_space`); None in an older spoolq's name."""


def parse_staging(name: str) -> StagingName | None:
    """What a name spoolq stages under says (``<tag>.<pid>.<hex>.tmp``, see
    :meth:`Layout.staging_str`), else None: a client's file.  The hex part is the
    writer's pid space (8 digits, :func:`pid_space`) and 12 random digits, a count after
    them for a spare; an older spoolq's has no space (12 digits, a spare's count up to
    7 more).  A name an older spoolq parses alike: it takes a cut-short move of this
    one's for its own, never for a client's file (removed after a day).  A client
    staging its drop as ``export.20261201.part.tmp`` had it removed within a scan,
    mid-write: a name spoolq's needs that much hex."""
    parts = name.rsplit(".", 3)
    if len(parts) != 4 or parts[3] != "tmp" or len(parts[2]) < _RANDOM_DIGITS \
            or not all(c in _HEX for c in parts[2]):
        return None
    pid, dash, space = parts[1].partition("-")
    if dash:  # <pid>-<space>: the names of c6b73eb, on main for 27 minutes (QA: a cancel
        # of that version cut short in stage/ was never settled, and went after a day)
        if not pid.isdigit() or len(space) != _SPACE_DIGITS or not all(c in _HEX
                                                                       for c in space):
            return None
        return StagingName(parts[0], int(pid), space)
    if not pid.isdigit():
        return None
    return StagingName(parts[0], int(pid),
                       parts[2][:_SPACE_DIGITS] if len(parts[2]) >= _SPACED_DIGITS else None)


_SPACE_DIGITS = 8
_RANDOM_DIGITS = 12
_SPACED_DIGITS = _SPACE_DIGITS + _RANDOM_DIGITS
@functools.cache
def pid_space() -> str | None:
    """This process's pid space: its pid namespace on this boot of this host, as 8 hex
    digits; None where ``/proc`` does not tell.  A staging file's name carries its
    writer's pid with it: where the spaces differ (a container sharing the spool, another
    host on a shared filesystem), no process here can tell whether that pid runs."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
        with open("/proc/sys/kernel/random/boot_id", "rb") as file:
            boot = file.read().strip()
    except OSError:
        return None
    return hashlib.blake2b(boot + os.fsencode(namespace),
                           digest_size=_SPACE_DIGITS // 2).hexdigest()


def random_part() -> str:
    """The hex part of a new staging name: this process's pid space, then 12 random
    digits (:func:`parse_staging`)."""
    return (pid_space() or "") + os.urandom(_RANDOM_DIGITS // 2).hex()


_HEX = frozenset("0123456789abcdef")
_last_checked: str | None = None


def _checked(job_id: str) -> str:
    """``job_id`` if it is a valid id (else ValueError).

    A job's paths are built about ten times from the same id object, so the
    last one that passed is remembered by identity.
    """
    global _last_checked
    if job_id is _last_checked:
        return job_id
    if ID_RE.fullmatch(job_id) is None:
        raise InvalidId(f"invalid id: {job_id!r}")
    _last_checked = job_id
    return job_id
