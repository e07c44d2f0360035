"""The forkserver's refusal of a fork it cannot make (processor.forkserver_init) closes
the request's pipe ends it finds in multiprocessing's loop, so the client reads end of
file.  Where it finds none (a Python whose loop names them otherwise), a refusal would
leave the client's read of the pid blocked for good, and with it the processor's loop
thread: it lets the error end the forkserver instead, as multiprocessing does.  Run in a
subprocess: the module ignores SIGTERM and wraps os.fork where it is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CHECK = textwrap.dedent("""
    import errno, os
    import processor.forkserver_init as fi

    def refuse():
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    fi._fork = refuse

    def known_loop():
        child_r, child_w = os.pipe()
        fds = [os.dup(0)]
        try:
            fi._fork_or_refuse()
        except OSError as exc:
            gone = []
            for fd in (child_r, child_w, *fds):
                try:
                    os.fstat(fd)
                except OSError:
                    gone.append(fd)
            return exc.errno, len(gone)

    def unknown_loop():
        request = os.pipe()
        try:
            fi._fork_or_refuse()
        except OSError as exc:
            return exc.errno, request

    print(known_loop() == (errno.ECONNABORTED, 3))
    code, request = unknown_loop()
    print(code == errno.EAGAIN)
""")


def test_a_refused_fork_is_refused_only_where_the_request_can_be_closed() -> None:
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["True", "True"], out
