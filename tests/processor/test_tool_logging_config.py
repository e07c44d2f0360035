"""A tool's ``logging.config.dictConfig`` does not silence the processor's log.

``dictConfig`` (and ``fileConfig``) disable every logger that exists when they run,
unless told not to: a tool module that set up its logging so at import left the
processor's log empty (no started, claimed, done or stopped line, though every job ran),
and a FAST tool doing it in its run silenced every later job's lines; in a worker, the
tools' own lines were lost until the worker was replaced (QA).  The loggers are enabled
again once the tools are loaded and after each run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]


def test_a_tools_dictconfig_leaves_the_processors_log_whole(spool_root: Path,
                                                           daemon: StartDaemon) -> None:
    d = daemon(SPOOL_TOOLS="ptools,dictconfig_tools", JOB_NUM="1")
    drop(spool_root, "before", {"tool": "echo", "params": {"message": 1}})
    assert wait_record(spool_root, "before")["state"] == "done"
    drop(spool_root, "configures", {"tool": "t_dictconfig"})
    assert wait_record(spool_root, "configures")["state"] == "done"
    drop(spool_root, "forces", {"tool": "t_basicconfig"})
    assert wait_record(spool_root, "forces")["state"] == "done"
    drop(spool_root, "after", {"tool": "echo", "params": {"message": 2}})
    drop(spool_root, "warns", {"tool": "t_logs_warning"})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert wait_record(spool_root, "warns")["state"] == "done"
    assert d.stop() == 0
    events = d.events()
    assert any(e.get("msg") == "started" for e in events), d.logs()
    for line in d.logs().splitlines():  # basicConfig(force=True) added plain text (QA)
        assert line.startswith("{"), line
    for job_id in ("before", "configures", "forces", "after", "warns"):
        said = [e["event"] for e in events if e.get("id") == job_id and "event" in e]
        assert said == ["claimed", "done"], (job_id, d.logs())
    assert any("a warning of the tool's own, job warns" in str(e.get("msg"))
               and e.get("id") == "warns" for e in events), d.logs()
    assert any(e.get("msg") == "stopped" for e in events), d.logs()
