"""FAST tools that leave processes behind, for the stop tests (``SPOOL_TOOLS=ptools,stoptools``).

Each writes the pid of what it left to ``pid_file`` and returns at once (but
``s_fast_thread``, which leaves threads).
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid_file: str
    seconds: float = 1000.0
    new_session: bool = False


class FastChild(BaseTool):
    """Starts ``sleep`` (in a session of its own with ``new_session``) and leaves it."""

    name: ClassVar[str] = "s_fast_child"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        child = subprocess.Popen(["sleep", str(params.seconds)],
                                 start_new_session=params.new_session)
        with open(params.pid_file, "w") as fh:
            fh.write(str(child.pid))
        return ToolResult.ok()


class FastOrphan(BaseTool):
    """Leaves a grandchild ``sleep`` behind (a double fork: its parent exits at once)."""

    name: ClassVar[str] = "s_fast_orphan"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        out = subprocess.run(["sh", "-c", f"sleep {params.seconds} >/dev/null 2>&1 & echo $!"],
                             capture_output=True, check=True).stdout
        with open(params.pid_file, "w") as fh:
            fh.write(out.decode().strip())
        return ToolResult.ok()


class WaitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_after_s: float = 1.0


class FastThreadChild(BaseTool):
    """Starts ``sh -c 'exit 3'`` from a short-lived thread of its own (as a thread pool
    that is shut down does), waits ``wait_after_s`` after it exited, then waits for it
    and returns its exit status."""

    name: ClassVar[str] = "s_thread_child"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = WaitParams

    def execute(self, params: WaitParams, ctx: ToolContext) -> ToolResult:
        started: list[subprocess.Popen[bytes]] = []
        thread = threading.Thread(target=lambda: started.append(
            subprocess.Popen(["sh", "-c", "exit 3"])))
        thread.start()
        thread.join()  # the thread that forked the child is gone: the child is the main thread's
        time.sleep(params.wait_after_s)
        return ToolResult.ok({"returncode": started[0].wait()})


class ThreadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 1000.0


_POOL = ThreadPoolExecutor(1)
"""A pool a tool keeps across jobs: its threads are joined by the interpreter's exit."""


class FastThread(BaseTool):
    """Leaves threads behind: a ``threading.Timer`` armed for ``seconds``, a thread that
    sleeps as long (and starts one of its own that does), none of them daemons, and a
    task that sleeps as long on :data:`_POOL`.  It first waits for the processor's
    background import to end: a stop while it runs exits without the interpreter's own
    exit, which would hide what this tool leaves."""

    name: ClassVar[str] = "s_fast_thread"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 60.0
    Params: ClassVar[type[BaseModel]] = ThreadParams

    def execute(self, params: ThreadParams, ctx: ToolContext) -> ToolResult:
        for thread in threading.enumerate():
            if thread.name == "spoolq-imports":
                thread.join(50)
        threading.Timer(params.seconds, lambda: None).start()

        def sleeps() -> None:
            threading.Thread(target=time.sleep, args=(params.seconds,), daemon=False).start()
            time.sleep(params.seconds)

        threading.Thread(target=sleeps, daemon=False).start()
        _POOL.submit(time.sleep, params.seconds)
        return ToolResult.ok()


class SpawnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 1000.0
    every_s: float = 0.02


class FastSpawner(BaseTool):
    """Leaves a thread that starts ``sleep seconds`` every ``every_s`` (as a tool's worker
    thread that starts a helper for each piece of work would), for as long as the
    processor lives."""

    name: ClassVar[str] = "s_fast_spawner"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = SpawnParams

    def execute(self, params: SpawnParams, ctx: ToolContext) -> ToolResult:
        def spawn() -> None:
            while True:
                subprocess.Popen(["sleep", str(params.seconds)])
                time.sleep(params.every_s)

        threading.Thread(target=spawn, daemon=True).start()
        return ToolResult.ok()
