"""First in the COMPUTE forkservers' preload lists, and imported nowhere else.

It makes the forkserver a child subreaper (``PR_SET_CHILD_SUBREAPER``, which its
workers do not inherit).  A worker that dies by itself (``os._exit``, a segfault,
the OOM killer) then leaves the processes its tool started to the forkserver
instead of to init, where the pool finds them among the forkserver's children and
kills them (:func:`processor.proctree.kill_orphans`).  The forkserver reaps them as
it reaps its workers, with a warning about a pid it did not fork, silenced here.

It also turns the cyclic garbage collector off for the rest of the preload, whose
imports make objects that live as long as the forkserver: collections in between
only walked them, some 50 of the preload's 370 ms of CPU, and the first worker's
start (so READY) waits for the preload's end.  :mod:`processor.forkserver_ready`,
last in the list, freezes what the preload made and turns the collector back on
before any worker is forked.

And it makes the forkserver ignore SIGTERM and SIGHUP (and SIGUSR1 and SIGUSR2, which
ask the processor for a report), as multiprocessing makes it ignore SIGINT.  Sent to
the processor's whole process group (``kill -TERM -PGID``, a shell's ``kill %1``,
systemd's default ``KillMode=control-group``, a terminal's hangup), such a signal must
reach the processor alone, which drains and requeues (DESIGN section 9) or reports: a
forkserver that died of it took every worker with it (their parent-death signal),
failing each running job ``worker_crashed``.  It ends when its parent does
(EOF on its alive pipe), and its workers put these signals back to the default
(:func:`processor.worker.prepare_process`).

And a fork it cannot make (out of processes: ``RLIMIT_NPROC``, the cgroup's
``pids.max``, systemd's ``TasksMax``; or out of memory) refuses that one request
instead of ending the forkserver: ``multiprocessing``'s loop lets the error end it,
and every worker with it, failing each running job ``worker_crashed`` (exit status
255) for one worker that could not be replaced.  Refused, the request's pipes are
closed (the pool reads end of file and tries again a second later, see
:mod:`processor.pool`), and the loop goes on.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import sys
import warnings

from processor.proctree import PR_SET_CHILD_SUBREAPER, prctl

gc.disable()
prctl(PR_SET_CHILD_SUBREAPER, 1)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the processor's report signals, likewise
signal.signal(signal.SIGUSR2, signal.SIG_IGN)
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")

_fork = os.fork


def _fork_or_refuse() -> int:
    """``os.fork`` for the forkserver's loop (see the module docstring)."""
    try:
        pid = _fork()
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.ENOMEM):
            raise
        # What the request brought, which the loop closes only after a fork: the
        # client's pipe ends (its read of the pid then ends) and the worker's fds.
        loop = sys._getframe(1).f_locals
        if not isinstance(loop.get("child_w"), int):
            # Not the loop this knows (multiprocessing/forkserver.py of 3.11 to 3.14):
            # refused, the request's pipe stayed open and the client's read of the pid
            # blocked for good, and the processor's loop thread with it.  Let it end.
            raise
        ends = [loop.get("child_r"), loop.get("child_w"), *(loop.get("fds") or ())]
        for fd in ends:
            if isinstance(fd, int):
                with contextlib.suppress(OSError):
                    os.close(fd)
        # The one error the loop survives (as for a client gone mid-request).
        raise OSError(errno.ECONNABORTED, f"cannot fork a worker: {exc.strerror}") from exc
    if pid == 0:
        os.fork = _fork  # a worker's tools fork as everyone does
    return pid


os.fork = _fork_or_refuse

