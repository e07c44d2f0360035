"""``spool-processor`` (= ``python -m processor``): run the daemon, or list its tools.

    spool-processor [run] [--spool-dir DIR] [--job-num N] [--executor local|dask://H:P]
    spool-processor tools [--json]

Exit status: 0 after a clean stop (SIGTERM/SIGINT); 2 on a configuration
error or a spool it cannot use (one line on stderr), which a restart cannot fix
(the unit's ``RestartPreventExitStatus=2``); 75 (sysexits' ``EX_TEMPFAIL``) on a
spool it cannot use for now (one line: full, out of descriptors, an I/O error),
which systemd restarts it after; 1 on anything else.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import gc
import io
import logging
import os
import sys
import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from processor import startup
from processor.stop_signals import EarlyStops
from spool.errors import EXIT_TEMPFAIL, ConfigError, SpoolError, SpoolIOError, passing
from spool.stdio import Parser, integer, open_standard_fds, output_failed, parse_args
from spool.version import add_version

# The settings, the daemon, the pool and the tools are imported once the COMPUTE
# forkserver has started, where that can come first (see processor.startup): its
# imports and theirs then run side by side.
if TYPE_CHECKING:
    from processor.executor import ComputeExecutor
    from processor.registry import Registry
    from spool.settings import Settings


def make_executor(settings: Settings, named: str = "SPOOL_EXECUTOR", *,
                  params: tuple[tuple[str, str], ...] = ()) -> ComputeExecutor:
    """The COMPUTE executor ``SPOOL_EXECUTOR`` names; ``named`` is how an error names that
    setting (``--executor`` when the option gave it); ``params``: the registry's
    :meth:`~processor.registry.Registry.params_digests`."""
    if settings.executor == "local":
        from processor.pool import LocalPool  # noqa: PLC0415 - see the imports above

        return LocalPool(settings.job_num, tool_modules=settings.tool_modules,
                         memory_mb=settings.worker_memory_mb,
                         max_jobs=settings.worker_max_jobs, log_level=settings.log_level,
                         params=params)
    if settings.executor.startswith(("dask://", "tcp://")):
        from processor.dask_connect import (  # noqa: PLC0415
            require_distributed,
            scheduler_address,
        )
        from processor.dask_executor import DaskExecutor  # noqa: PLC0415 - optional extra

        scheduler_address(settings.executor, named)  # a bad one is said as it was given
        require_distributed(named)  # and a missing extra, by the name that asked
        return DaskExecutor(settings, params=params)
    raise ConfigError(f"{named}={settings.executor!r}: use 'local' or 'dask://host:port'")


@contextlib.contextmanager
def _stdout_on_stderr() -> Iterator[None]:
    """Python's stdout and descriptor 1 on stderr for the block: what a tool module
    writes to descriptor 1 as it is imported (C code, a child process it runs without
    capture) came before the catalogue, which ``spoolq tools`` then could not read (QA).
    Descriptor 1 closed (``>&-``) is left so: the catalogue's write says it."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        saved = -1
    try:
        if saved >= 0:
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved >= 0:
            os.dup2(saved, 1)
            os.close(saved)


EXIT_CONFIG = 2
OPTIONS = {"spool_dir": "--spool-dir", "job_num": "--job-num", "executor": "--executor"}
"""The option of each setting it overrides, to name it in an error."""
_DEFAULT_TEXT = {"JOB_NUM": "the CPUs it may use", "SPOOL_TOOLS": "none",
                 "SPOOL_DATA_DIR": "SPOOL_DIR/data", "SPOOL_WORKER_MAX_JOBS": "0, no limit",
                 "SPOOL_WORKER_MEMORY_MB": "0, no limit"}
"""Defaults the model holds as something else than what they mean."""


def _epilog() -> str:
    """The settings the processor reads, each with its default (from the model itself,
    so the help cannot drift from it)."""
    from spool.settings import Settings  # noqa: PLC0415 - only for --help

    names = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str) and not alias.startswith("STATUSD_"):
            default = _DEFAULT_TEXT.get(alias) or field.get_default(call_default_factory=True)
            default = getattr(default, "value", default)  # an enum's, as it is written
            names.append(f"{alias}\0[{default}]".replace(" ", "\0"))  # \0: no break there
    listed = textwrap.fill(", ".join(names), width=88, initial_indent="  ",
                           subsequent_indent="  ").replace("\0", " ")
    return ("Settings come from the environment (and a .env file), defaults in brackets; "
            "the\noptions above override them:\n" + listed
            + "\n\nExit status: 0 after a clean stop (SIGTERM, SIGINT or SIGHUP), 2 on a "
            "configuration\nerror or a spool it cannot use (one line on stderr), 75 on a "
            "spool it cannot use\nfor now (full, out of descriptors, an I/O error, a "
            "network filesystem's lock\ndaemon down: one line; systemd restarts it), 1 on "
            "anything else.\nSIGUSR1 or SIGUSR2 stops nothing: it logs the runs in flight and "
            "each thread's stack.\nSIGALRM, SIGVTALRM or SIGPROF (a FAST tool's "
            "signal.alarm or setitimer) stops\nnothing either: a warning (once a minute at "
            "most), and the timer is disarmed.")


class _Parser(Parser):
    def format_help(self) -> str:
        # Only for --help: importing the settings first would delay the forkserver's start
        # (see processor.startup), which begins before they are read.
        self.epilog = _epilog()
        return super().format_help()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spool-processor", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the spoolq daemon on a spool, or list its tools.")
    parser.add_argument("command", nargs="?", choices=["run", "tools"], default="run",
                        help="run: the daemon (the default); tools: print the tool "
                        "catalogue without a running daemon")
    # A str: Settings refuses an empty one, where Path("") would be the working directory.
    parser.add_argument("--spool-dir", help="the spool root (SPOOL_DIR)")
    parser.add_argument("--job-num", type=integer, help="COMPUTE workers (JOB_NUM)")
    parser.add_argument("--executor", help="local, or dask://host:port (SPOOL_EXECUTOR)")
    parser.add_argument("--json", action="store_true", help="tools: print JSON")
    add_version(parser)
    return parser


def tools_text(registry: Registry, as_json: bool) -> str | bytes:
    """The catalogue as ``tools`` prints it: the table ``spoolq tools`` prints, or JSON
    (UTF-8 bytes, as JSON is, whatever stdout's encoding)."""
    import orjson  # noqa: PLC0415 - see the imports above

    from spool.catalogue import catalogue_entry  # noqa: PLC0415 - see the imports above
    from spool.cli.catalog import catalogue_table  # noqa: PLC0415 - see the imports above

    # In the shape spoolq tools --json gives (name, mode, timeout, ...), one for both.
    entries = [catalogue_entry(entry) for entry in registry.catalogue()]
    if as_json:
        return orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    return catalogue_table(entries) + "\n"


def write_out(text: str | bytes) -> int:
    """``text`` on stdout, flushed: 0; or one line and 1 when it cannot be written (closed,
    a full disk: a script's ``> catalogue.json`` must not read as written), 141 when its
    reader went away.  Bytes go to stdout's buffer as they are; what a stdout that is not
    UTF-8 cannot encode of a str is shown as escapes (``\\u2013``), not a crash."""
    if sys.stdout is None:  # closed (>&-): print() would drop the text without a word
        return output_failed("spool-processor", None)
    try:
        if isinstance(text, str) and isinstance(sys.stdout, io.TextIOWrapper):
            text = text.encode(sys.stdout.encoding, "backslashreplace")
        if isinstance(text, bytes):
            sys.stdout.flush()
            _write_all(sys.stdout.buffer, text)
        else:
            sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        return output_failed("spool-processor", exc)
    return 0


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """``data`` written whole, or the OSError that stopped it.  A write larger than the
    buffer goes to the descriptor at once, and one the kernel cut short (the disk full
    or the file size limit reached part way, the pipe's reader gone) returns the bytes
    it took, without an error: the catalogue was cut and the exit 0 (QA).  Written on,
    the rest fails with the error itself."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if not written:  # a descriptor that takes nothing and says no error
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[written:]


def _main_by_name() -> None:
    """Started as the console script (``bin/spool-processor``, as the unit starts it),
    ``__main__`` is that file, and multiprocessing had each worker the forkserver starts
    run it again (``runpy.run_path``), importing this module from disk: once an upgrade
    was installed over the running processor (or the venv swapped, or the script gone
    for the half second a reinstall takes), every COMPUTE job on a new worker failed
    ``worker_crashed`` until a restart (QA).  Named as ``python -m processor`` names it,
    the workers leave it alone (a module named ``*.__main__`` is never run again)."""
    main_module = sys.modules.get("__main__")
    if (main_module is not None and __name__ != "__main__"
            and getattr(main_module, "__spec__", None) is None):
        main_module.__spec__ = __spec__


def main(argv: list[str] | None = None) -> int:
    _main_by_name()
    parser = _parser()
    args = parse_args(parser, argv)  # --help that cannot be written: one line, exit 1
    if args.json and args.command != "tools":
        # Without 'tools' it started the daemon, which then claimed jobs on the spool of
        # someone who meant to list the tools (QA).
        parser.error("--json goes with 'tools' (spool-processor tools --json)")
    if args.command == "run":
        # Before any descriptor of its own takes a closed one's number.  Not for the
        # commands whose output is the point (``tools``): a closed stdout is their error.
        open_standard_fds()
        EarlyStops().install()  # a stop from now on is a clean one (see EarlyStops)
        # Start-up's objects live as long as the daemon: collections among them only
        # walked them (some 16 of 240 ms of CPU); _run freezes them, then collects again.
        gc.disable()
    try:
        startup.leave_a_removed_cwd(startup.path_settings(args.spool_dir, os.environ))
        # The forkserver's imports are on the way to READY (the first worker waits for
        # them): it starts before the settings load when they can only say "local".
        early = args.command == "run" and not startup.executor_may_be_named(
            args.executor, os.environ)
        if early:
            _prepare_children()
            startup.start_forkserver()
        settings = _load_settings(args)
        if args.command == "tools":
            from processor.registry import load_registry  # noqa: PLC0415 - see the imports

            # What a tool module prints as it is imported is not the catalogue.
            with _stdout_on_stderr():
                registry = load_registry(settings.tool_modules)
            return write_out(tools_text(registry, args.json))
        if not early:
            _prepare_children()
            if settings.executor == "local":
                startup.start_forkserver(settings.tool_modules,
                                         preload=settings.preload_tools,
                                         quant=settings.preload_quant)
        return _run(settings, OPTIONS["executor"] if args.executor is not None
                    else "SPOOL_EXECUTOR")
    except (ConfigError, SpoolError) as exc:
        from spool.text import one_line  # noqa: PLC0415 - see the imports above

        print(f"spool-processor: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_TEMPFAIL if passing(exc) else EXIT_CONFIG
    except Exception:
        logging.getLogger("spoolq.processor").exception("crashed")
        return 1


def _prepare_children() -> None:
    """What the forkserver, its workers and FAST tools inherit, set before any starts."""
    startup.single_threaded_math()
    startup.stdin_from_devnull()  # FAST tools run here: a read of stdin gets end of file


def _load_settings(args: argparse.Namespace) -> Settings:
    from spool.settings import load_settings  # noqa: PLC0415 - see the imports above

    settings = load_settings(spool_dir=args.spool_dir, job_num=args.job_num,
                             executor=args.executor, options=OPTIONS)
    # FAST tools run in this process, and one may chdir: no path may depend on the
    # working directory (a relative SPOOL_DIR crashed the processor at its next step).
    return settings.model_copy(update={
        "spool_dir": settings.spool_dir.absolute(),
        "data_dir_override": settings.data_dir_override and
        settings.data_dir_override.absolute()})


def _run(settings: Settings, executor_named: str = "SPOOL_EXECUTOR") -> int:
    """Set up the log, load the tools and run the daemon until it stops (its modules
    imported only now, once the forkserver started: see the imports at the top).

    Out of descriptors before the status file says "up" (the loop's wake pipe, a
    worker's pipes: a limit too low for start-up, the system's file table full) is
    trouble that passes: one line and exit status 75, as in recovery's pass, not a
    crash's traceback and 1.  Once up, the daemon pauses for it instead.
    """
    up: list[bool] = []
    try:
        return _start(settings, up, executor_named)
    except OSError as exc:
        from spool.fsops import NO_DESCRIPTOR  # noqa: PLC0415 - imported by the daemon by now

        if up or exc.errno not in NO_DESCRIPTOR:
            raise
        raise SpoolIOError(f"out of descriptors at start-up: {exc.strerror}") from exc


def _tools_and_executor(settings: Settings, executor_named: str
                        ) -> tuple[Registry, ComputeExecutor]:
    """The tools loaded, and the COMPUTE executor made for them."""
    from processor import capture  # noqa: PLC0415
    from processor.logs import repair as repair_logging  # noqa: PLC0415
    from processor.registry import load_registry  # noqa: PLC0415

    # What tool modules print or warn as they are imported: JSON lines, like the rest.
    saved = capture.install()
    try:
        registry = load_registry(settings.tool_modules)
    finally:
        capture.uninstall(saved)
        repair_logging()  # a tool module's dictConfig or basicConfig at import
    return registry, make_executor(settings, executor_named,
                                   params=registry.params_digests())


def _start(settings: Settings, up: list[bool], executor_named: str) -> int:
    """:func:`_run`'s steps; ``up`` gets an item once the status file says "up"."""
    from processor import capture, lifecycle  # noqa: PLC0415
    from processor.daemon import Processor, others_at_start  # noqa: PLC0415
    from processor.logs import setup_logging  # noqa: PLC0415
    from processor.notify import SystemdNotifier  # noqa: PLC0415
    from processor.quant.tools import FAST_MODULES, FAST_TOOLS  # noqa: PLC0415
    from processor.stdio_pipes import unbuffered  # noqa: PLC0415
    from spool.settings import warn_unknown_settings  # noqa: PLC0415
    from spool.transitions import Spool  # noqa: PLC0415

    # Each log write waits for room, even should a FAST tool's child have made the
    # processor's stderr (a pipe, journald's socket) non-blocking: they share it.
    setup_logging(settings.log_level, unbuffered(2))
    warn_unknown_settings(logging.getLogger("spoolq.processor"))
    # Before the tools load: the others then know a processor is starting that may
    # offer tools they do not load (see lifecycle.lease_before_tools); and what they
    # offer is read at once, so one that stops while the tools load is remembered
    # (see daemon.others_at_start).
    lease = lifecycle.lease_before_tools(settings)
    try:
        others = None if lease is None else others_at_start(settings, lease[0])
        registry, executor = _tools_and_executor(settings, executor_named)
        notifier = SystemdNotifier.from_env(os.environ)
        # What start-up made (modules, the tools, pandas and numpy when a tool loads them,
        # some 70,000 objects) lives as long as the daemon: a full collection of the
        # loop's garbage no longer walks it (43 ms of the loop's CPU, and as long a stall
        # of every job, each time one came).
        gc.freeze()
        gc.enable()
        # Until its run takes it over (take_hold gives it back when a step fails): a
        # Processor that cannot be made (out of descriptors for its inbox's pipe, exit
        # 75) left the lock file, which the others took for a start for their grace.
        processor = Processor(settings, registry, executor, notifier=notifier, lease=lease,
                              others=others)
    except BaseException:
        if lease is not None:
            lifecycle.give_back(Spool.from_settings(settings).mover, lease[1])
        raise
    # numpy and pandas, for the FAST quant tools, once the status file says "up" (with
    # SPOOL_PRELOAD_QUANT off, at the first FAST quant job, which waits for it as a job
    # that comes during the start's import does).  A stop
    # that comes sooner does not wait for the rest of the import: the process ends at
    # once, its clean-up done (see BackgroundImports.exit_now_if_running).  A crash
    # waits for it, as any ordinary exit does (the thread is not a daemon).
    imports = startup.BackgroundImports(FAST_MODULES, on_done=processor.release_fast,
                                        on_broken=processor.request_restart)

    def start_imports() -> None:
        processor.fast.held = True  # no FAST run beside the import: see BackgroundImports
        imports.start()

    def import_for(tool: type) -> bool:
        # Not in the tool's own run: there it counted against the job's timeout, and an
        # import cut short (out of descriptors) left half-made modules to every later
        # FAST job of this process (or crashed it), where this one restarts it.
        if not issubclass(tool, FAST_TOOLS):
            return False
        processor.fast.import_for = None
        start_imports()
        return True

    if not settings.preload_quant:
        processor.fast.import_for = import_for

    def on_ready() -> None:
        up.append(True)
        if settings.preload_quant:
            start_imports()

    try:
        status = processor.run(on_ready)
    finally:
        # FAST tool code may run on until the exit: see kill_late_tool_processes.
        atexit.register(lifecycle.kill_late_tool_processes)
    imports.exit_now_if_running(status, tool_threads=capture.threads_left())
    return status


if __name__ == "__main__":
    sys.exit(main())
