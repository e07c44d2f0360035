"""A tool module whose params were edited while the processor runs: the processor's
catalogue (``spoolq tools``) still shows the old params, a new worker has the new ones,
and a job written to the catalogue failed ``invalid_params`` with no word of why (left
by the fifty-third session)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
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
        "(in this worker: the tool takes other params than the processor's, whose "
        "catalogue shows the ones it loaded; its module changed since the processor "
        "started? restart the processor)"), error
    assert d.stop() == 0


@pytest.mark.parametrize("edit", ["touched", "body"])
def test_params_refused_by_a_tool_taking_the_same_params_carry_no_note(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path, edit: str) -> None:
    """A module touched but unchanged, or edited without a change to its params (the
    worker may even run the old code still): the note told an operator to restart the
    processor over params that were simply wrong (h329)."""
    module, release = tmp_path / "params_tools.py", tmp_path / "release"
    source = MODULE.replace("RELEASE", str(release)).replace("FIELD", "count")
    module.write_text(source)
    release.touch()
    d = daemon(tools="params_tools", tools_dir=tmp_path, JOB_NUM="1",
               SPOOL_WORKER_MAX_JOBS="1")
    if edit == "touched":
        os.utime(module, (time.time() + 5, time.time() + 5))
    else:
        module.write_text(source.replace('ToolResult.ok("e")', 'ToolResult.ok("edited")'))
    drop(spool_root, "bad", {"tool": "edited_params", "params": {"count": "many"}})
    error = wait_record(spool_root, "bad")["error"]
    assert error == {"type": "invalid_params", "message": "count: Input should be a valid "
                     "integer, unable to parse string as an integer"}, error
    assert d.stop() == 0


UNSTABLE_MODULE = '''
from datetime import UTC, datetime
from typing import Literal
from pydantic import BaseModel
from processor.tools import BaseTool, ExecutionMode, ToolResult
KINDS = tuple({"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"})
class Params(BaseModel):
    count: int = 0
    kind: Literal[KINDS] = "alpha"  # a set's order: each process's hash seed
    since: datetime = datetime.now(UTC)  # made as each process imports the module
class Unstable(BaseTool):
    name = "unstable_schema"
    execution_mode = ExecutionMode.COMPUTE
    Params = Params
    def execute(self, params, ctx):
        return ToolResult.ok("u")
'''


def test_a_schema_that_differs_only_in_order_or_defaults_carries_no_note(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """Digested whole, a ``Literal`` of a set's members or a default computed at import
    gave each worker another schema than the processor's, and every bad params job of
    such a tool the note (h330)."""
    (tmp_path / "unstable_tools.py").write_text(UNSTABLE_MODULE)
    d = daemon(tools="unstable_tools", tools_dir=tmp_path, JOB_NUM="1")
    drop(spool_root, "bad", {"tool": "unstable_schema", "params": {"count": "many"}})
    error = wait_record(spool_root, "bad")["error"]
    assert error == {"type": "invalid_params", "message": "count: Input should be a valid "
                     "integer, unable to parse string as an integer"}, error
    assert d.stop() == 0
