"""A COMPUTE worker SIGKILLed mid-job (the kernel's OOM killer, in a container or a
cgroup with a memory limit) failed its job ``worker_crashed`` "worker process killed by
signal SIGKILL", naming no likely cause, where a worker killed while it loaded its tools
names the OOM killer (h408)."""

from __future__ import annotations

import signal

from processor.executor import Task
from processor.runner import death_outcome
from spool.errors import ErrorType


def _task() -> Task:
    return Task("j", "t", {}, 60.0, "/nowhere", 1)


def test_a_sigkilled_worker_names_the_oom_killer() -> None:
    outcome = death_outcome(_task(), None, -signal.SIGKILL, 1.5, 42)
    assert outcome.error_type is ErrorType.WORKER_CRASHED and outcome.retryable
    assert outcome.message == ("worker process killed by signal SIGKILL (the OOM killer, "
                               "or a kill from outside)")


def test_other_deaths_are_said_as_before() -> None:
    assert death_outcome(_task(), None, -signal.SIGSEGV, 1.5, 42).message == (
        "worker process killed by signal SIGSEGV")
    assert death_outcome(_task(), None, 3, 1.5, 42).message == (
        "worker process exited with status 3")
