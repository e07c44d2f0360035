"""The settings a process that runs job after job keeps for all of them.

A tool runs in a process other jobs run in after it: the processor itself for a
FAST tool, a worker for a COMPUTE one.  What it changes there for good and is
process-wide reaches those later jobs: the working directory and umask (where
their relative paths land, who may read what they write), the logging setup
(the log silenced) and the warnings filters (``simplefilter("error")``: a later
job that merely warned failed).  :class:`KeptSettings` notes them and puts them
back; :mod:`processor.capture` (FAST) and :mod:`processor.process_state`
(COMPUTE) each call it with the rest of what they restore.
"""

from __future__ import annotations

import os

from processor import logs


class KeptSettings:
    """The working directory (open, so a removed one is no trouble), umask, logging
    and, once :meth:`keep_warnings` is called, warnings filters of this process."""

    def __init__(self) -> None:
        try:
            self.cwd: int | None = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self.cwd = None
        self.umask = os.umask(0o022)  # reading it means setting it
        os.umask(self.umask)
        self.warnings: logs.WarningFilters | None = None

    def keep_warnings(self) -> None:
        """The warnings filters as they are now are the ones to put back."""
        self.warnings = logs.WarningFilters()

    def restore(self) -> None:
        """Put back what a job changed (each step cheaper than checking it first)."""
        logs.repair()
        if self.warnings is not None:
            self.warnings.restore()  # np.seterr too: see processor.runner.run_tool
        os.umask(self.umask)
        if self.cwd is not None:
            try:  # (not contextlib.suppress: 0.27 us a use, this runs after every job)
                os.fchdir(self.cwd)
            except OSError:
                return  # a tool closed it: as it is

    def close(self) -> None:
        if self.cwd is not None:
            os.close(self.cwd)
            self.cwd = None
        if self.warnings is not None:
            self.warnings.close()
            self.warnings = None
