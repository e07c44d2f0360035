"""What the processor sets up first, before it imports the tools.

The local pool's workers come from a ``forkserver`` that preloads numpy, pandas
and the tools (see :mod:`processor.pool`), about half a second of imports.  The
processor has imports of its own (the daemon, its registry loads the tools).
Started here, first thing, the forkserver does its imports while the processor
does its own, on another core, instead of after them: the processor wrote its
status file about 0.3 s sooner (0.56 to 0.62 s after launch against 0.86 to
0.97 s, on the 2-CPU machine of docs/benchmarks.md, when the processor still
imported pandas itself), which a ``systemctl restart`` waits for.  The first
worker's start waits for the end of the forkserver's imports, so they are on
the way to READY: the forkserver starts even before the settings load (about
0.15 s of CPU, pydantic-settings' import most of it) when nothing could name
another executor (:func:`executor_may_be_named`).

Everything the forkserver and its workers inherit is set before it starts:
single-threaded BLAS (``JOB_NUM`` workers, a core each) and stdin on
``/dev/null``.  This module imports nothing heavy itself.

The processor itself does not import numpy and pandas before it is ready: only
its FAST tools need them, and :class:`BackgroundImports` loads them once the
status file is written, so a ``systemctl restart`` does not wait for them (a
FAST job that comes sooner waits in ``pending/`` for the rest of the import,
which py-spy saw end 0.4 to 0.8 s after READY on the machine of
docs/benchmarks.md; COMPUTE jobs start at once).
A processor stopped before that import ends does not wait for it either: see
:meth:`BackgroundImports.exit_now_if_running`.  An import still under way after
:data:`IMPORT_SLOW_S` (a slow NFS mount, a disk that hangs) is said in a warning that
names the module it is importing, once, and its end in an info line.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import importlib
import logging
import multiprocessing as mp
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from spool.errors import ConfigError
from spool.text import comma_list

QUANT_PRELOAD = ("numpy", "pandas", "processor.quant.tools", "processor.quant.backtest",
                 "processor.quant.analysis")
"""What the built-in quant tools' COMPUTE runs import: preloaded by the forkservers
(:mod:`processor.forkserver_quant` for the local pool's, unless ``SPOOL_PRELOAD_QUANT``
is off: then a worker imports them before such a run, :func:`processor.worker
.load_quant`)."""
PRELOAD = ["processor.forkserver_init", "processor.forkserver_quant", "processor.worker",
           "processor.forkserver_tools", "processor.forkserver_ready"]
"""What the local pool's forkserver imports before it forks a worker
(:mod:`processor.forkserver_init` first, :mod:`processor.forkserver_ready` last)."""
DASK_PRELOAD = ["processor.forkserver_init", *QUANT_PRELOAD, "processor.worker",
                "processor.forkserver_ready"]
"""A Dask worker's forkserver's: the quant modules always (it serves whatever processor
sends it work), without the tool modules.  It lives as long as its ``dask worker``,
across processor restarts, and scaling.md promises that restarting the processor is
enough for changed SPOOL_TOOLS modules: each job process imports them."""

PRELOAD_TOOLS_ENV = "SPOOLQ_PRELOAD_TOOLS"
"""Read by :mod:`processor.forkserver_tools` in the forkserver (which imports this
module; this one does not import it: it runs the preload)."""
PRELOAD_NONE = "-"
"""Its value for no preload of the tools at all (entry points neither)."""
PRELOAD_QUANT_ENV = "SPOOLQ_PRELOAD_QUANT"
"""Read by :mod:`processor.forkserver_quant` in the forkserver: ``1`` or ``0``, from the
settings' ``SPOOL_PRELOAD_QUANT``."""
_ON = frozenset({"1", "true", "yes", "on", "t", "y"})  # pydantic's true for a bool
_OFF = frozenset({"0", "false", "no", "off", "f", "n"})  # and its false


def setting_from(environ: Mapping[str, str], alias: str, field: str) -> str | None:
    """The value of a setting (variable ``alias``, field ``field``) as the settings will
    read it from ``environ``, for a forkserver started before they load; None when it is
    not set.  As pydantic-settings reads it: the name in any case (the last of those
    wins), else the field's own name (``populate_by_name``, as ``EXECUTOR`` is taken: see
    :func:`executor_may_be_named`)."""
    for name in (alias.lower(), field.lower()):
        values = [value for key, value in environ.items() if key.lower() == name]
        if values:
            return values[-1]
    return None


def _flag(value: str | None, default: bool) -> bool:
    """A bool setting's value in pydantic's words; ``default`` when unset or unreadable
    (the processor's settings refuse that one, and it stops)."""
    word = "" if value is None else value.strip().lower()
    return True if word in _ON else False if word in _OFF else default


def preload_quant_from(environ: Mapping[str, str]) -> bool:
    """``SPOOL_PRELOAD_QUANT`` as the settings will read it (:func:`setting_from`): on
    unless it says off.  Read by its upper-case name alone, ``PRELOAD_QUANT=0`` (the
    field's own name) had the processor skip its import and the forkserver still preload
    numpy and pandas."""
    return _flag(setting_from(environ, "SPOOL_PRELOAD_QUANT", "preload_quant"), True)


def preload_tools_from(environ: Mapping[str, str]) -> list[str] | None:
    """The tool modules an early forkserver preloads (:mod:`processor.forkserver_tools`):
    ``SPOOL_TOOLS``' when ``SPOOL_PRELOAD_TOOLS`` is on, None when off, both read as the
    settings will read them (:func:`setting_from`).  Read by their upper-case names
    alone, ``spool_preload_tools=1`` (or ``PRELOAD_TOOLS=1``) had the processor's
    settings say on and the forkserver preload nothing."""
    if not _flag(setting_from(environ, "SPOOL_PRELOAD_TOOLS", "preload_tools"), False):
        return None
    listed = setting_from(environ, "SPOOL_TOOLS", "tools") or ""
    return comma_list(listed)

log = logging.getLogger("spoolq.processor")

IMPORT_SLOW_S = 10.0
"""How long the background import may take before a warning says what FAST jobs wait on
(it ends 0.4 to 0.8 s after READY on the machine of docs/benchmarks.md)."""

_SINGLE_THREADED_MATH = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "NUMEXPR_NUM_THREADS")


def single_threaded_math() -> None:
    """BLAS and friends use one thread unless told otherwise: JOB_NUM workers, one core
    each."""
    for name in _SINGLE_THREADED_MATH:
        os.environ.setdefault(name, "1")


def stdin_from_devnull() -> None:
    """Fd 0 reads ``/dev/null``: a tool, or a child of it, that reads its stdin gets end
    of file at once.  It was the processor's stdin (a terminal, a shell's pipe), which
    a job has no business reading: the read hung until the job's timeout, and, from a
    terminal, took the user's keystrokes.  The processor does the same for its FAST
    tools, which run in it."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)  # inheritable, as fd 0 is
        os.close(devnull)


def leave_a_removed_cwd(paths: Mapping[str, str | None]) -> None:
    """Move to ``/`` when the working directory was removed (started from a folder a
    script deleted since: ``cd build; ...; rm -rf build``).  The forkserver's start asks
    for it (multiprocessing passes it to its children), and the processor crashed with
    a traceback and exit 1, which systemd restarts, or a shell's script never sees.

    No relative path can be reached from a removed folder: a relative one of ``paths``
    (setting name -> value) is refused then, as spoolq and statusd refuse it.  Read from
    ``/``, a spool's took the jobs of whatever spool stood there, a data folder's gave
    the tools whatever data stood there."""
    try:
        os.getcwd()
    except FileNotFoundError:
        for name, path in paths.items():
            if path and not os.path.isabs(os.path.expanduser(path)):
                raise ConfigError(f"invalid setting {name}: {path} is relative, and the "
                                  "working directory it is relative to was removed; give "
                                  "the whole path") from None
        os.chdir("/")


def path_settings(spool_dir: str | None, environ: Mapping[str, str]) -> dict[str, str | None]:
    """The settings that name a folder, as given (``--spool-dir``, else ``SPOOL_DIR``;
    ``SPOOL_DATA_DIR``), for :func:`leave_a_removed_cwd`.  The settings read a variable's
    name in any case (pydantic-settings), and so does this."""
    upper = {key.upper(): value for key, value in environ.items()}
    return {"--spool-dir" if spool_dir else "SPOOL_DIR": spool_dir or upper.get("SPOOL_DIR"),
            "SPOOL_DATA_DIR": upper.get("SPOOL_DATA_DIR")}


def executor_may_be_named(option: str | None, environ: Mapping[str, str]) -> bool:
    """Whether the settings could name an executor other than the default ``local``,
    judged without loading them: ``--executor``, a variable whose name ends with
    ``EXECUTOR`` in any case (``SPOOL_EXECUTOR``, or ``EXECUTOR``: the settings
    accept the field's own name too, and ignore case), or a ``.env`` (of any kind) in
    the working directory.  These are every source :class:`spool.settings.Settings`
    reads; where this says False, the executor is ``local``."""
    if option is not None or os.path.lexists(".env"):
        return True
    return any(name.upper().endswith("EXECUTOR") for name in environ)


def start_forkserver(tool_modules: Sequence[str] | None = None, *,
                     preload: bool = False, quant: bool = True) -> None:
    """Start this process's COMPUTE forkserver now, preloading :data:`PRELOAD`; the
    pool's workers come from it (an idempotent step when it runs already).
    ``tool_modules`` (the settings' ``SPOOL_TOOLS``) are preloaded with the entry points
    when ``preload`` (``SPOOL_PRELOAD_TOOLS``), none otherwise (see
    :mod:`processor.forkserver_tools`), and :data:`QUANT_PRELOAD` when ``quant``
    (``SPOOL_PRELOAD_QUANT``); ``tool_modules`` None before the settings load: the
    forkserver reads those settings from the environment then."""
    if tool_modules is not None:
        os.environ[PRELOAD_TOOLS_ENV] = ",".join(tool_modules) if preload else PRELOAD_NONE
        os.environ[PRELOAD_QUANT_ENV] = "1" if quant else "0"
    else:  # not a parent processor's word (a processor started by a tool's job)
        os.environ.pop(PRELOAD_TOOLS_ENV, None)
        os.environ.pop(PRELOAD_QUANT_ENV, None)
    mp.get_context("forkserver").set_forkserver_preload(PRELOAD)
    need_temp_dir()
    start_resource_tracker()
    multiprocessing.forkserver.ensure_running()


def need_temp_dir() -> None:
    """Make multiprocessing's temporary folder now (the forkserver's socket is in it),
    or raise :class:`ConfigError` saying what to set: with a read-only root filesystem
    and no writable ``/tmp`` (a container's ``--read-only``, ``TMPDIR`` unset or
    read-only, the working directory ``/``) the processor crashed at start with a
    31-line traceback from ``tempfile`` and exit 1, which restarts it for ever (h408)."""
    import multiprocessing.util  # noqa: PLC0415 - multiprocessing's own, already loaded

    try:
        folder = multiprocessing.util.get_temp_dir()
    except OSError as exc:  # tempfile's FileNotFoundError: "No usable temporary directory"
        raise ConfigError(
            "the COMPUTE workers' forkserver needs a writable temporary folder for its "
            "socket, and none was found (TMPDIR, then /tmp, /var/tmp, /usr/tmp and the "
            f"working directory {os.getcwd()!r}, each missing, read-only or full): set "
            "TMPDIR to a writable folder (a container with a read-only root: mount a "
            "tmpfs on /tmp)") from exc
    # The socket's name (listener- and 8 characters) in that folder must fit a Unix
    # socket's address: a long TMPDIR crashed at the bind, "AF_UNIX path too long".
    socket_path = os.fsencode(os.path.join(folder, "listener-12345678"))
    if len(socket_path) > UNIX_PATH_MAX:
        raise ConfigError(
            f"TMPDIR is too long for the COMPUTE workers' forkserver's socket: "
            f"{folder!r} and the socket's name make {len(socket_path)} bytes, over the "
            f"{UNIX_PATH_MAX} a Unix socket's path may have: set TMPDIR to a shorter "
            "folder (/tmp)")


UNIX_PATH_MAX = 107
"""The longest path a Unix socket may be bound to on Linux (``sun_path``'s 108 bytes,
the last a NUL)."""


TRACKER_IGNORES = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""What the resource tracker is started ignoring (it ignores SIGINT and SIGTERM itself):
sent to the processor's process group (``systemctl kill -s USR1``, a logrotate hook),
they ended it, and each later job that used shared memory started a tracker of its own
and warned of leaks (QA).  Ignored signals stay ignored across its exec."""


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now (before the forkserver, which shares
    it; and again before each worker's start, which starts one that died), blocking
    :data:`TRACKER_IGNORES` in it, and ignoring them when called on the main thread;
    nothing when one runs already.  Its exec keeps the mask: blocked, they stay pending
    in it for good (the pool's loop thread may not set handlers)."""
    # Blocked here meanwhile too: one that comes is held for the handler put back, where
    # ignored it was lost (a SIGHUP, a stop: the review).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, TRACKER_IGNORES)
    try:
        saved = {signum: signal.signal(signum, signal.SIG_IGN) for signum in TRACKER_IGNORES
                 } if threading.current_thread() is threading.main_thread() else {}
        try:
            multiprocessing.resource_tracker.ensure_running()
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class BackgroundImports:
    """Import modules on a thread of their own, then freeze what they made (as start-up
    freezes its own objects: the collector need not walk them).

    The thread is not a daemon: an ordinary exit waits for it, since a thread cut off
    mid-import while the interpreter finalizes could hold a module lock the exit needs.
    A stopped processor calls :meth:`exit_now_if_running` instead, which does not wait.

    An import cut short for lack of a resource (:func:`cut_short`) leaves numpy or
    pandas half-made: the modules loaded before the failure stay, and an import tried
    again in this process builds the rest beside them (a pandas Series then printed
    without its dtype line).  ``on_broken`` is called with what happened, and nothing
    more is imported: the processor restarts (:func:`processor.lifecycle.restart`).
    Any other failure is the module's own, which its tools' jobs fail with; then, or
    once every module is imported, ``on_done`` is called.  The processor holds its
    FAST runs until then (a FAST tool that imported numpy beside a failing import got
    the half-made module: ``cannot import name`` from a partly initialised module, a
    ``tool_error`` that spent the job's attempt).
    """

    def __init__(self, modules: Sequence[str], *, on_done: Callable[[], None],
                 on_broken: Callable[[str], None]) -> None:
        self.modules = tuple(modules)
        self.on_done = on_done
        self.on_broken = on_broken
        self._thread = threading.Thread(target=self._run, name="spoolq-imports")
        # A daemon: never waited for, by an exit or by exit_now_if_running.
        self._watch = threading.Timer(IMPORT_SLOW_S, self._say_slow)
        self._watch.daemon = True
        self._started = 0.0
        self._said_slow = False

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()
        self._watch.start()

    def _say_slow(self) -> None:
        """The import is still under way: FAST jobs wait in ``pending/`` with no line that
        said why (a hung NFS mount held them for good)."""
        if not self._thread.is_alive():
            return
        self._said_slow = True
        log.warning("FAST jobs wait for the background import, under way for %g s: "
                    "importing %s", IMPORT_SLOW_S, self._importing(), extra={"fields": {
                        "see": "the disk or mount it reads from (sys.path)"}})

    def _importing(self) -> str:
        """The module the import thread is importing now: the innermost of the imports
        under way on it (``importlib``'s own frames name it), or ``?``."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        while frame is not None:
            if frame.f_code.co_name == "_find_and_load" and isinstance(
                    name := frame.f_locals.get("name"), str):
                return name
            frame = frame.f_back
        return "?"

    def exit_now_if_running(self, status: int, *, tool_threads: bool = False) -> None:
        """End the process with ``status`` now if the imports still run, or
        ``tool_threads`` (threads FAST tools left run: :func:`processor.capture
        .threads_left`); else return, and the interpreter exits as usual.

        A stop soon after start waited for the rest of the import of numpy and
        pandas (some 0.2 s on a quiet host, seconds on a loaded one: 3.1 s seen at
        load 18).  Here, what an exit does besides is done (the ``atexit`` functions:
        the log's last lines flushed, ``multiprocessing``'s finalizers and children),
        then ``os._exit``: no interpreter finalization, so no module lock it could
        need.  The forkserver and the resource tracker end once their pipes from
        this process close, as at any exit.  Only where the exit would wait for
        nothing but this thread: another thread that is not a daemon (a Dask link's
        call thread still closing a client) is left to the ordinary exit, which
        waits for it and for the import.

        A tool's threads are daemons, but the ordinary exit still waits for those of a
        ``ThreadPoolExecutor`` (its own exit hook joins them), for good for a task that
        never ends; and a daemon cut off mid-import could hold a lock as this thread
        would.
        """
        others = [t for t in threading.enumerate() if t.is_alive() and not t.daemon
                  and t is not self._thread and t is not threading.main_thread()]
        if not (self._thread.is_alive() or tool_threads) or others:
            return
        atexit._run_exitfuncs()  # as the interpreter's exit would, before it finalizes
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()  # what print() left in a buffer (the log flushed above)
        os._exit(status)

    def _run(self) -> None:
        for name in self.modules:
            try:
                importlib.import_module(name)
            # Whatever it raised (a SystemExit too: the thread would end with neither
            # call, and the FAST runs held for good); the tool that needs the module
            # fails its jobs with the same.
            except BaseException as exc:
                log.exception("importing %s in the background failed", name)
                if cut_short(exc):
                    self._watch.cancel()
                    self.on_broken(f"importing {name} failed: {exc}")
                    return
        self._watch.cancel()
        if self._said_slow:
            log.info("background import done after %.1f s: FAST jobs run",
                     time.monotonic() - self._started)
        gc.freeze()
        self.on_done()


SHORT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EIO})
"""The errors of an import cut short by its host rather than by its module: descriptors
or memory short, a read that failed."""


def cut_short(exc: BaseException) -> bool:
    """``exc`` (or what it came from) is an import the host cut short: an OSError of
    :data:`SHORT_OF`, a MemoryError, or an extension module whose ``dlopen`` failed for
    one of those (an ImportError that gives only the error's text)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or (
                isinstance(seen, OSError) and seen.errno in SHORT_OF):
            return True
        if isinstance(seen, ImportError) and any(
                os.strerror(code) in str(seen) for code in SHORT_OF):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
