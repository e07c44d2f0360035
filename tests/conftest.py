"""Suite-wide set-up: compile the project's modules once, before any test runs; and
reports that pytest-xdist's workers can send (:func:`pytest_runtest_makereport`).

The tests start hundreds of real processors, statusd servers and ``spoolq`` runs as
subprocesses.  Where ``PYTHONDONTWRITEBYTECODE`` is set (our development sandbox
sets it), none of them caches bytecode, so each compiled every project module it imported
again: 40 to 50 ms a ``spoolq`` run, more for a processor and its forkserver, and
about a fifth of the wall time of the CLI and daemon tests.  ``compileall`` writes
the caches whatever that setting says; a source edited later is compiled again as
usual, since a cache records its source's mtime and size.

The stop signals the suite was started with ignored or blocked are caught instead
(:func:`pytest_configure`), so that what it starts gets them as a user's shell does.
"""

from __future__ import annotations

import compileall
import os
import signal
from collections.abc import Generator
from pathlib import Path

import pytest

from spool.early_stops import STOP_SIGNALS

_ROOT = Path(__file__).resolve().parent.parent
# Every process a test starts (the CLI, both daemons, the actors) imports this tree's
# packages, as pytest's own does (``pythonpath`` in pyproject.toml): with the package
# installed editable from another checkout (a git worktree), a ``spoolq`` or statusd
# a test ran imported that checkout instead, and passed or failed on code other than
# the code under test.  (A test that builds a PYTHONPATH from this one keeps it.)
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
# Processors and forkservers a test starts skip the imports of numpy, pandas and the quant
# tools' computations made for their first quant job (SPOOL_PRELOAD_QUANT; about 0.55 s
# of CPU a processor and its forkserver): the suite starts hundreds, and is CPU-bound on
# a 2-CPU host.  A quant job still runs, importing them as it starts.  A test of what
# the preload does, or of a path only it takes, is marked ``preload_quant``
# (:func:`_preload_quant`), and so is a module whose daemons run the quant tools as a
# user's would (the demo).
os.environ["SPOOL_PRELOAD_QUANT"] = "0"
# Everything a test's subprocess imports from this tree: the packages, the
# benchmarks' tools and the tests' own tool modules (SPOOL_TOOLS=...).
_PACKAGES = ("spool", "processor", "statusd", "bench", "tests")


WORKERS_PER_CPU = 2

_STOP_SIGNALS = STOP_SIGNALS | {signal.SIGQUIT}
"""The daemons' and the CLI's stop signals, and SIGQUIT, which a background job ignores
with SIGINT."""


def pytest_configure(config: pytest.Config) -> None:
    """Stop signals ignored or blocked here are caught instead, and unblocked.

    An ignored signal stays ignored across ``exec`` and a blocked one stays blocked, in
    every process a test starts: the suite run as a script's background job (SIGINT and
    SIGQUIT ignored) or under ``nohup`` (SIGHUP) had every Ctrl-C and hangup test fail,
    the CLI and the daemons deaf to what the test sent (a ``cancel`` waited out its 60
    s).  A caught signal is reset to its default at ``exec``; this process still takes
    no notice of it, as it was started to.  Runs before pytest-xdist starts its
    workers, which inherit it.
    """
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, _unheeded)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _unheeded(signum: int, frame: object) -> None:
    """A stop signal this process was started to ignore (see :func:`pytest_configure`)."""


@pytest.fixture(autouse=True)
def _preload_quant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked ``preload_quant`` runs with the shipped default, the preload on, for
    what it starts (an autouse fixture: set before the test's other fixtures of its
    scope start a daemon)."""
    if request.node.get_closest_marker("preload_quant") is not None:
        monkeypatch.setenv("SPOOL_PRELOAD_QUANT", "1")


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (-p no:xdist) knows none
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: :data:`WORKERS_PER_CPU` workers a CPU, ``--maxprocesses`` at most.

    The suite is mostly waits on real daemons: on a 2-CPU host, one worker a CPU ran
    it in 741 s, two in 512 s.
    """
    return WORKERS_PER_CPU * len(os.sched_getaffinity(0))


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: its controller compiled them before starting it
    for name in _PACKAGES:
        compileall.compile_dir(_ROOT / name, quiet=2)  # a read-only checkout: no caches, no noise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A report's text with a lone surrogate (a non-UTF-8 file name) in UTF-8.

    pytest-xdist sends each report from its worker to the controller as UTF-8, and a
    surrogate there, in captured output or in a failure's message, ended the whole run
    (``DumpError: strings must be utf-8 encodable``) with the test named as a crash,
    its failure unsaid."""
    report = yield
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if report.failed and report.longrepr is not None:  # a skip's is a tuple: left as it is
        text = str(report.longrepr)
        if _utf8(text) != text:  # the rare case: the failure as plain text
            report.longrepr = _utf8(text)
    return report


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
