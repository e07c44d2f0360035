"""The Huey application of ``bench/peers.py``: the same work as ``bench.bench_tools``.

Imported by Huey's consumer (``huey_consumer bench.huey_app.huey``) and by the
benchmark's client, both with ``SPOOLQ_BENCH_HUEY`` naming the storage: ``sqlite:FILE``
(``SqliteHuey``, its defaults: WAL, no fsync) or ``file:FOLDER`` (``FileHuey``, Huey's
file storage, the peer nearest to a spool directory).  Results are stored (the
benchmark counts them to see completion), so :func:`noop` returns ``True``: Huey keeps
no ``None`` results.
"""

from __future__ import annotations

import os

from huey import FileHuey, Huey, SqliteHuey

from bench.bench_tools import matmul_work


def _make() -> Huey:
    kind, _, where = os.environ["SPOOLQ_BENCH_HUEY"].partition(":")
    if kind == "sqlite":
        return SqliteHuey("spoolq-bench", filename=where)
    if kind == "file":
        return FileHuey("spoolq-bench", path=where)
    raise ValueError(f"SPOOLQ_BENCH_HUEY={kind}:...: use sqlite:FILE or file:FOLDER")


huey = _make()


@huey.task()
def noop() -> bool:
    """Nothing, as ``bench_tools.noop``; True so that Huey stores a result."""
    return True


@huey.task()
def matmul(size: int, reps: int) -> float:
    return matmul_work(size, reps)
