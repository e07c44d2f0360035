"""The uWSGI side of the uWSGI-spooler peer of ``bench/peers.py``.

Loaded by ``uwsgi --wsgi-file bench/uwsgi_app.py --spooler DIR`` (with the
repository root on ``PYTHONPATH``).  A request ``GET /?n=N[&size=S&reps=R]`` spools
``N`` tasks from the uWSGI worker, as a uWSGI application does (``uwsgi.spool``
writes one file per task into the spool directory and wakes the spooler).  The
spooler processes run :func:`task`: the no-op, or ``bench_tools.matmul_work`` when
``size`` and ``reps`` are given, and append one byte to ``UWSGI_DONE`` (one
``write`` with ``O_APPEND``), the completion count the benchmark reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import uwsgi  # only inside uWSGI

from bench.bench_tools import matmul_work, noop

_DONE = os.environ["UWSGI_DONE"]
_done_fd: list[int] = []


def task(env: dict[bytes, bytes]) -> int:
    if b"size" in env:
        matmul_work(int(env[b"size"]), int(env[b"reps"]))
    else:
        noop()
    if not _done_fd:
        _done_fd.append(os.open(_DONE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    os.write(_done_fd[0], b".")
    return int(uwsgi.SPOOL_OK)


uwsgi.spooler = task


def application(environ: dict[str, Any], start_response: Callable[..., Any]
                ) -> Iterable[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    args = {k.encode(): query[k].encode() for k in ("size", "reps") if k in query}
    for _ in range(int(query.get("n", "1"))):
        uwsgi.spool(args or {b"noop": b"1"})
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
