"""Tools and plain functions for ``bench/throughput.py``.

Loaded by the processor through ``SPOOL_TOOLS=bench.bench_tools`` (with the
repository root on ``PYTHONPATH``, so its forkserver workers import it too),
and imported by the benchmark itself for the raw ``ProcessPoolExecutor``
baseline, which runs the very same functions:

* ``bench_noop`` (COMPUTE): returns at once, the COMPUTE twin of the built-in
  FAST ``echo``; :func:`noop` is its body.
* ``bench_matmul`` (COMPUTE): :func:`matmul_work`, ``reps`` products of two
  ``size`` x ``size`` float64 matrices; the benchmark calibrates ``reps`` to
  about 20 ms on the machine at hand and passes it as a param.  With
  ``timed: true`` it returns :func:`matmul_timed`'s timings instead of a
  checksum (``bench/w3_gaps.py``).
* ``bench_flood`` (COMPUTE): short lines on stdout as fast as it can, until told
  to stop, for ``bench/output_flood.py``.

numpy is imported by :func:`matmul_work` on its first call, so whoever calls
it first must already have pinned the BLAS thread count (the variables in
:data:`BLAS_THREADS`; the processor does it before it starts its workers, the
benchmarks before they calibrate).  ``bench/dask_w3.py`` uses the same tool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS")
_SEED = 20_240_601


def noop() -> None:
    """Nothing: the unit of work of the no-op workloads."""


def matmul_work(size: int, reps: int) -> float:
    """``reps`` chained products of ``size`` x ``size`` matrices; a checksum comes back."""
    import numpy as np  # noqa: PLC0415 - after BLAS_THREADS are pinned

    rng = np.random.default_rng(_SEED)
    a = rng.standard_normal((size, size)) / np.sqrt(size)
    b = rng.standard_normal((size, size)) / np.sqrt(size)
    for _ in range(reps):
        b = a @ b
        b /= np.abs(b).max()  # keeps the values finite however many reps
    return float(b[0, 0])


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took (the benchmarks' one stopwatch)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_reps(size: int, target_ms: float) -> int:
    """The ``reps`` that make :func:`matmul_work` take about ``target_ms`` here.

    A line through two counts (10 and 30 products, medians of 5), since a job's time
    is a fixed part (two random matrices: 2 ms at size 256) plus one per product:
    dividing a single run's time by its count put the fixed part into every product
    and landed 256^2 jobs at 16 ms for a 20 ms target.
    """
    import statistics  # noqa: PLC0415 - a benchmark's start-up, not the tool's

    def median_s(reps: int) -> float:
        return statistics.median(timed(lambda: matmul_work(size, reps)) for _ in range(5))

    matmul_work(size, 3)  # numpy imported, the caches warm
    short, long = median_s(10), median_s(30)
    per_rep = max((long - short) / 20, 1e-9)
    return max(1, round((target_ms / 1e3 - (short - 10 * per_rep)) / per_rep))


def matmul_timed(size: int, reps: int) -> dict[str, float]:
    """:func:`matmul_work`, timed where it runs: its process, its start and end on the
    system-wide monotonic clock (comparable across processes) and its thread's CPU
    seconds, for ``bench/w3_gaps.py``."""
    start, cpu = time.perf_counter(), time.thread_time()
    matmul_work(size, reps)
    return {"pid": os.getpid(), "start": start, "end": time.perf_counter(),
            "cpu_s": time.thread_time() - cpu}


class BenchNoop(BaseTool):
    """Return at once, in a COMPUTE worker (the no-op of the COMPUTE lane)."""

    name: ClassVar[str] = "bench_noop"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 60.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        noop()
        return ToolResult.ok(None)


class MatmulParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=1, le=4096)
    reps: int = Field(ge=1, le=100_000)
    timed: bool = False  # the result says when and where the work ran (matmul_timed)


class BenchMatmul(BaseTool):
    """Chained matrix products for a calibrated time (the COMPUTE workload)."""

    name: ClassVar[str] = "bench_matmul"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 120.0
    Params: ClassVar[type[BaseModel]] = MatmulParams

    def execute(self, params: MatmulParams, ctx: ToolContext) -> ToolResult:
        if params.timed:
            return ToolResult.ok(matmul_timed(params.size, params.reps))
        return ToolResult.ok({"checksum": matmul_work(params.size, params.reps)})


class FloodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    how: Literal["print", "write"]
    stop_file: str
    max_s: float = Field(default=60.0, gt=0, le=600)


class BenchFlood(BaseTool):
    """Short lines on stdout as fast as its pipe takes them, until ``stop_file`` exists
    (``max_s`` at most): ``print`` one line a call, or ``write`` 64 KiB of 32-byte
    lines per ``os.write``.  Returns how many lines it wrote, in how many seconds."""

    name: ClassVar[str] = "bench_flood"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 660.0
    Params: ClassVar[type[BaseModel]] = FloodParams

    def execute(self, params: FloodParams, ctx: ToolContext) -> ToolResult:
        start = time.monotonic()
        chunk = b"a short line of output, 32 byte\n" * 2048
        lines = 0
        while not os.path.exists(params.stop_file) and time.monotonic() - start < params.max_s:
            if params.how == "print":
                for _ in range(1000):
                    print("a short line of output", lines)
                    lines += 1
            else:
                with memoryview(chunk) as view:
                    done = 0
                    while done < len(view):
                        done += os.write(1, view[done:])
                lines += 2048
        return ToolResult.ok({"lines": lines, "seconds": time.monotonic() - start})
