"""A tool module whose params were edited while the processor runs: the processor's
catalogue (``spoolq tools``) still shows the old params, a new worker has the new ones,
and a job written to the catalogue failed ``invalid_params`` with no word of why (left
by the fifty-third session)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_for, wait_record

StartDaemon = Callable[..., Daemon]

MODULE = '''
import os, time
from pydantic import BaseModel
from processor.tools import BaseTool, ExecutionMode, ToolResult
class Params(BaseModel):
    FIELD: int = 0
class Edited(BaseTool):
    name = "edited_params"
    execution_mode = ExecutionMode.COMPUTE
    Params = Params
    def execute(self, params, ctx):
        open("RELEASE.started", "w").close()
        while not os.path.exists("RELEASE"):
            time.sleep(0.01)
        return ToolResult.ok("e")
'''


def test_params_a_new_worker_refuses_name_the_module_changed(spool_root: Path,
                                                               daemon: StartDaemon,
                                                               tmp_path: Path) -> None:
    module, release = tmp_path / "params_tools.py", tmp_path / "release"
    source = MODULE.replace("RELEASE", str(release))
    module.write_text(source.replace("FIELD", "count"))
    d = daemon(tools="params_tools", tools_dir=tmp_path, JOB_NUM="1",
               SPOOL_WORKER_MAX_JOBS="1")
    drop(spool_root, "first", {"tool": "edited_params", "params": {"count": 1}})
    wait_for((tmp_path / "release.started").exists, 20, "the first job to run in a worker")
    # Edited while the first job runs (one job a worker): the next worker loads this one.
    module.write_text(source.replace("FIELD: int = 0", "renamed: int\n    model_config "
                                     "= {'extra': 'forbid'}").replace("FIELD", "renamed"))
    release.touch()
    assert wait_record(spool_root, "first")["state"] == "done"
    drop(spool_root, "second", {"tool": "edited_params", "params": {"count": 1}})
    error = wait_record(spool_root, "second")["error"]
    assert error["type"] == "invalid_params", error
    assert error["message"].endswith(
        f"(in this worker: the tool's module {module} changed since the processor loaded "
        "it, whose catalogue shows the params it had then; restart the processor)"), error
    assert d.stop() == 0


def test_params_refused_by_an_unchanged_module_carry_no_note(spool_root: Path,
                                                              daemon: StartDaemon,
                                                              tmp_path: Path) -> None:
    module, release = tmp_path / "params_tools.py", tmp_path / "release"
    module.write_text(MODULE.replace("RELEASE", str(release)).replace("FIELD", "count"))
    release.touch()
    d = daemon(tools="params_tools", tools_dir=tmp_path, JOB_NUM="1")
    drop(spool_root, "bad", {"tool": "edited_params", "params": {"count": "many"}})
    error = wait_record(spool_root, "bad")["error"]
    assert error == {"type": "invalid_params", "message": "count: Input should be a valid "
                     "integer, unable to parse string as an integer"}, error
    assert d.stop() == 0
