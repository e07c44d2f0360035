"""``spool-statusd`` (= ``python -m statusd``): REST, WebSocket, metrics and dashboard.

Reads the spool only (through the ``spool`` package), so it keeps answering
while the processor is down.  Settings (DESIGN section 7): ``SPOOL_DIR``,
``SPOOL_FSYNC`` (for HTTP writes), ``SPOOL_SCAN_S`` (rescan interval),
``SPOOL_LOG_LEVEL``, ``STATUSD_HOST``, ``STATUSD_PORT``, ``STATUSD_TOKEN``,
``STATUSD_MAX_BODY_BYTES``, ``STATUSD_ALLOWED_ORIGINS``; ``--host``, ``--port`` and ``--spool-dir``
override them.  Port 0 picks a free port; the chosen address is logged as
``statusd listening on http://HOST:PORT``.

Start: statusd listens as soon as its app is set up, and loads its index of the spool
meanwhile (7 to 10 s at 20,000 to 124,000 records, during which it used to refuse every
connection); ``indexed N records in ...`` follows once it is in.  Until then ``/healthz``
says ``indexing`` (503) with how far it is, the stats and metrics are the start scan's,
and what needs the index waits for it a few seconds, then answers 503 with Retry-After
(:mod:`statusd.indexing`).  Once it is in, the objects it made are frozen out of the
garbage collector's way (``gc.freeze``).  A load that fails (a state folder statusd may
not list) ends statusd as it always did: one line, exit 1.

Connections: the soft limit on open files is raised to the hard one at start
(systemd leaves services 1,024, which 1,000 idle clients used up: nobody else
was served), and a connection that has not sent a complete request within
``IDLE_S`` of opening, or of its last response, is closed (aiohttp's own
default was an hour), and a write's body must arrive within ``IDLE_S`` of its
handler starting to read it (408 and closed otherwise), so slow or silent
clients cannot pile up.  Client faults (a body that is not its
Content-Encoding, a hang-up mid-body) are one throttled line each, never an
ERROR with a traceback (:mod:`statusd.errors`).

SIGTERM, SIGINT or SIGHUP (a closed terminal, as under ``spoolq demo``; the processor
stops on it too): stop accepting, close every WebSocket (1001), give requests
in flight ``STOP_S`` to finish, stop the feed, exit 0; one that comes while statusd
starts (imports, settings) is the same clean stop, before it serves
(:class:`spool.early_stops.EarlyStops`), and one during the index's load stops the load
at its next file.  SIGUSR1 or SIGUSR2 stops nothing (their
default action ended statusd; the processor logs a report on them): one ``serving`` line,
a warning so that ``SPOOL_LOG_LEVEL=WARNING`` shows it too, with the addresses, the open
connections, the WebSocket clients and the tasks indexed (or how far the index's load
is); before statusd serves they do nothing.  A spool that is not
initialised, or a port that is taken: one line on stderr, exit 1 (so systemd
restarts and the journal says why).  Bad settings: one line, exit 2 (restarting
cannot fix them; the unit does not retry).

aiohttp and the app are imported only once the settings are read, to serve: they
are half of the start-up's imports (0.5 s of 1.1 s on a loaded 2-core host), which
``--help``, ``--version`` and a bad setting need none of.  The settings' model
(pydantic) and asyncio are imported once ``main``'s stop handlers are in: imported with
this module, they were some 0.2 s before ``main`` (0.3 s under load) in which a SIGTERM
or SIGHUP still ended statusd by its default action.
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from spool.early_stops import REPORT_SIGNALS, STOP_SIGNALS, EarlyStops
from spool.errors import EXIT_TEMPFAIL, ConfigError, SpoolError, passing
from spool.stdio import Parser, integer, open_standard_fds, parse_args
from spool.text import one_line
from spool.version import add_version
from statusd import listening

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from spool.settings import Settings
    from statusd.loading import Loading

log = logging.getLogger("spoolq.statusd")

IDLE_S = 15.0
"""How long a connection may go without a complete request (headers included)."""
STOP_S = 5.0
"""At a stop, how long requests in flight get to finish before they are cancelled
(aiohttp waits that long, cancels, and waits that long again for the cancel).  aiohttp's
own 60 s let one client of a large page that reads slowly, or not at all (the stall
rule cuts that one off after 20 s), hold the stop past the unit's ``TimeoutStopSec=15``,
to end in a SIGKILL."""
MAX_NOFILE = 1 << 20
ACCEPT_TROUBLE_LINE_S = 10.0
"""Out of descriptors, refused connections are one line this often, with their count."""
OPTIONS = {"statusd_host": "--host", "statusd_port": "--port", "spool_dir": "--spool-dir"}
"""The option of each setting it overrides, to name it in an error."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="spool-statusd", description="REST, WebSocket, metrics and dashboard of a "
        "spool (writes are off unless STATUSD_TOKEN is set).",
        epilog="Settings come from the environment (and a .env file): SPOOL_DIR, "
        "SPOOL_FSYNC, SPOOL_SCAN_S, SPOOL_LOG_LEVEL, STATUSD_HOST (default 127.0.0.1), "
        "STATUSD_PORT (default 8000), STATUSD_TOKEN (the bearer token writes need; "
        "unset: writes answer 403), STATUSD_MAX_BODY_BYTES, STATUSD_ALLOWED_ORIGINS (origins "
        "besides its own whose pages may use it: a reverse proxy's). The options above override "
        "them. SIGTERM, SIGINT or SIGHUP stops it cleanly (exit status 0); SIGUSR1 or "
        "SIGUSR2 stops nothing: it logs what it serves (connections, WebSocket clients).")
    parser.add_argument("--host", help="bind address (STATUSD_HOST)")
    parser.add_argument("--port", type=integer, help="bind port, 0 for any free one (STATUSD_PORT)")
    # A str: Settings refuses an empty one, where Path("") would be the working directory.
    parser.add_argument("--spool-dir", help="the spool root (SPOOL_DIR)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    add_version(parser)
    return parse_args(parser, argv)  # --help that cannot be written: one line, exit 1


def _log_handler() -> logging.Handler:
    """Lines to stderr stamped in UTC to the millisecond, ``Z`` and all, as the processor's
    ``ts``: local time without an offset could not be matched with the processor's log
    of another unit's zone (QA)."""
    handler = logging.StreamHandler(sys.stderr)
    stamp = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                              datefmt="%Y-%m-%dT%H:%M:%S")
    stamp.converter = time.gmtime
    handler.setFormatter(stamp)
    return handler


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)  # --help and --version: a closed stdout is their error
    open_standard_fds()  # before any descriptor of its own takes a closed one's number
    # A stop while it starts: a clean one, before serving; a report signal: nothing yet.
    early = EarlyStops(STOP_SIGNALS, ignored=REPORT_SIGNALS)
    early.install()
    import asyncio  # noqa: PLC0415 - lazy, see the module's docstring

    from spool.settings import load_settings, warn_unknown_settings  # noqa: PLC0415 - lazy

    try:
        settings = load_settings(statusd_host=args.host, statusd_port=args.port,
                                 spool_dir=args.spool_dir, options=OPTIONS)
        logging.basicConfig(level=settings.log_level.upper(), handlers=[_log_handler()])
        warn_unknown_settings(logging.getLogger("spoolq.statusd"))
        try:
            names = (OPTIONS["statusd_host"] if args.host is not None else "STATUSD_HOST",
                     OPTIONS["statusd_port"] if args.port is not None else "STATUSD_PORT")
            asyncio.run(serve(settings, access_log=args.access_log, early=early, names=names))
        finally:
            early.install()  # the loop's close gave the signals their default actions
    except ConfigError as exc:  # restarting cannot fix it (RestartPreventExitStatus=2)
        print(f"spool-statusd: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except SpoolError as exc:
        # A spool never initialised, a path that is no folder: a setting to fix, as the
        # processor says (2: the unit does not restart it every 2 s until its start limit);
        # trouble that passes (a full disk, EIO) is tried again (75).
        print(f"spool-statusd: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_TEMPFAIL if passing(exc) else 2
    except OSError as exc:  # e.g. the port is taken, or a spool folder it may not read
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"spool-statusd: error: {one_line(f'{exc.strerror or exc}{where}')}",
              file=sys.stderr)
        return 1
    return 0


async def serve(settings: Settings, *, access_log: bool = False,
                early: EarlyStops | None = None,
                names: tuple[str, str] = ("STATUSD_HOST", "STATUSD_PORT")) -> None:
    """Serve until a stop signal (or not at all when ``early`` noted one already);
    ``names``: what gave the host and port (a variable, or an option), for an error."""
    import asyncio  # noqa: PLC0415 - lazy, see the module's docstring

    from aiohttp import web  # noqa: PLC0415 - lazy, see the module's docstring

    from statusd import sending  # noqa: PLC0415 - lazy, as above
    from statusd.app import create_app  # noqa: PLC0415 - lazy, see the module's docstring
    from statusd.errors import CLIENT_FAULTS, ServerLog  # noqa: PLC0415 - lazy, as above
    from statusd.protocol import AppRunner  # noqa: PLC0415 - lazy, as above
    from statusd.services import SERVICES  # noqa: PLC0415 - lazy, as above

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if early is not None and early.received is not None:
        stop.set()  # asked to stop while it started: see EarlyStops
    if stop.is_set():
        log.info("stopping")
        return
    cap = _raise_nofile()
    loop.set_exception_handler(AcceptTrouble(loop.get_exception_handler()))
    app = create_app(settings, body_timeout_s=IDLE_S)
    runner = AppRunner(app, handle_signals=False, keepalive_timeout=IDLE_S,
                       shutdown_timeout=STOP_S, max_connections=cap,
                       access_log=logging.getLogger("aiohttp.access") if access_log
                       else None,
                       logger=ServerLog(logging.getLogger("aiohttp.server"),
                                        app[CLIENT_FAULTS]))
    await runner.setup()  # the feed started; the index's load begun (statusd.app)
    for sig in REPORT_SIGNALS:
        loop.add_signal_handler(sig, report, sig, runner)
    if os.getpid() == 1:
        loop.add_signal_handler(signal.SIGCHLD, reap_orphans)
        reap_orphans()  # those that ended before the handler
    try:
        if not stop.is_set():  # a stop signal while it set up: no serving
            site = web.TCPSite(runner, settings.statusd_host, settings.statusd_port)
            try:
                await site.start()
            except OSError as exc:
                raise _listen_error(exc, settings, names) from exc
            for address in runner.addresses:
                log.info(listening.MESSAGE, _shown(address))
            if await _until_indexed(stop, app[SERVICES].tracker.loading):
                # Move the index out of the collector's way, or every full collection
                # walks 100,000s of records and stalls the loop for 100 ms or more.
                gc.freeze()
                await stop.wait()
        log.info("stopping")
    finally:
        # Requests in flight have STOP_S; a send still waiting then is cut off, or
        # aiohttp waits for it STOP_S more (see sending.cut_off_all).
        cut = loop.call_later(STOP_S, sending.cut_off_all)
        try:
            await runner.cleanup()
        finally:
            cut.cancel()


def _listen_error(exc: OSError, settings: Settings, names: tuple[str, str]
                  ) -> OSError | ConfigError:
    """What a failed listen says: the address asked for, by its setting.  A host name
    the resolver says does not exist is a setting to fix (exit 2: the unit does not
    restart it), where it said "Name or service not known" alone, exit 1, restarted
    every 2 s for ever (QA; a value that is no name or address at all is refused as the
    settings are read).  So is a port below 1024 this user may not bind (EACCES: it was
    restarted for ever too).  A port taken, an address not (yet) on this host or a name
    server not answering may pass (exit 1)."""
    host, port = names
    where = (f"cannot listen on {host}={settings.statusd_host!r}, "
             f"{port}={settings.statusd_port}: {exc.strerror or exc}")
    if isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_HOST:
        return ConfigError(where)
    if exc.errno == errno.EACCES:
        return ConfigError(f"{where} (a port below 1024 needs root or "
                           "CAP_NET_BIND_SERVICE: take one above it)")
    return OSError(exc.errno, where)


_NO_SUCH_HOST = frozenset(getattr(socket, name) for name in ("EAI_NONAME", "EAI_SERVICE",
                                                             "EAI_FAMILY", "EAI_BADFLAGS")
                          if hasattr(socket, name))
"""getaddrinfo's answers that no later try changes (EAI_AGAIN, a name server not
answering, may pass)."""


def reap_orphans() -> None:
    """Reap every child that has ended.  statusd starts no process of its own, but as
    PID 1 (a container's only process, no ``--init``) it adopts every orphan of its pid
    namespace, the children a ``docker exec`` or an exec probe left, and they stayed
    zombies for good, each holding a pid of the container's limit (h408)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return
        except InterruptedError:
            continue
        if pid == 0:
            return


async def _until_indexed(stop: asyncio.Event, loading: Loading) -> bool:
    """Wait for the index's load or a stop signal, whichever is first: True once it is
    loaded, False on a stop; the load's error when it failed (an OSError: a folder
    statusd may not list exits 1, as before it listened)."""
    import asyncio  # noqa: PLC0415 - lazy, see the module's docstring

    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(loading.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if stop.is_set():
        return False
    if loading.error is not None:
        raise loading.error
    return True


def report(signum: int, runner: web.AppRunner) -> None:
    """The ``serving`` line of a report signal (see the module's docstring)."""
    from statusd.services import SERVICES  # noqa: PLC0415 - imported by the app by now

    services = runner.app[SERVICES]
    server = runner.server
    loading = services.tracker.loading
    indexed = str(len(services.index)) if loading.ready else f"0, {loading.describe()}"
    log.warning("%s: serving %s (connections open: %d, WebSocket clients: %d, tasks "
                "indexed: %s)", signal.Signals(signum).name,
                " ".join(_shown(a) for a in runner.addresses) or "nothing yet",
                len(server.connections) if server is not None else 0,
                services.hub.clients, indexed)


def _shown(address: Any) -> str:
    """``host:port`` of a socket's address, an IPv6 host in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AcceptTrouble:
    """The loop's exception handler: asyncio's "socket.accept() out of system resource"
    (out of descriptors, every client holding one) becomes one line every
    :data:`ACCEPT_TROUBLE_LINE_S` with the count of failed accepts; anything else goes
    to the handler there was (asyncio's own when none).

    asyncio (3.11) logs an ERROR with a traceback for each failed accept, and goes on
    trying the rest of the listen backlog (some 128 tries, each one scheduling another
    retry): 64 descriptors and 200 WebSocket clients made 1.2 million log lines in
    90 s, which journald's rate limit answers by dropping everything else.  The
    connections open are served meanwhile, and new ones are accepted once clients go.
    """

    def __init__(self, previous: Any = None) -> None:
        self.previous = previous
        self.failed = 0
        self.next_line = 0.0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failed += 1
        now = time.monotonic()
        if now < self.next_line:
            return
        exc = context.get("exception")
        reason = getattr(exc, "strerror", None) or str(exc)
        log.error("cannot accept connections: %s (%d failed accepts since the last such "
                  "line); the open ones are still served", reason, self.failed)
        self.failed = 0
        self.next_line = now + ACCEPT_TROUBLE_LINE_S


def _raise_nofile() -> int | None:
    """Every client holds a descriptor: take all the descriptors the hard limit allows;
    the cap on connections that leaves statusd descriptors of its own
    (:func:`statusd.protocol.connection_cap`; None when there is no limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # e.g. above fs.nr_open: keep what there is
            log.warning("could not raise the open files limit from %d to %d: %s",
                        soft, wanted, exc)
    from statusd.protocol import connection_cap  # noqa: PLC0415 - lazy, as AppRunner

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else connection_cap(soft)


if __name__ == "__main__":
    sys.exit(main())
