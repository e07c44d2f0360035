"""A job's params are JSON, and a tool's ``Params`` takes them as pydantic takes JSON.

They were validated as Python objects (``model_validate`` of the parsed dict), where a
strict field takes only the Python type itself: a strict ``datetime``, ``tuple``,
enum or ``UUID`` field refused every value a job file can carry (an ISO string, an
array, the enum's value), so each such job failed ``invalid_params`` ("Input should be
a valid datetime"), though the tool's params schema (``spoolq tools``) asks for just
those strings and arrays.  Real daemon, real spool (see daemonkit).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]

GOOD = {"when": "2026-12-01T09:30:00Z", "window": [5, 20], "side": "buy",
        "order": "6f1c1d1e-9b1a-4c35-8a63-2f0e5f4c7d10"}


@pytest.mark.parametrize("tool", ["s_fast", "s_compute"])
def test_strict_params_take_what_json_spells(spool_root: Path, daemon: StartDaemon,
                                             tool: str) -> None:
    daemon(SPOOL_TOOLS="stricttools")
    drop(spool_root, "good", {"tool": tool, "params": GOOD})
    # Strict all the same: a string is no integer, a third item no pair.
    drop(spool_root, "bad", {"tool": tool, "params": {**GOOD, "window": [5, 20, 60],
                                                      "size": "2"}})
    good = wait_record(spool_root, "good")
    assert good["state"] == "done", good
    assert good["result"] == {**GOOD, "when": "2026-12-01T09:30:00Z", "size": 1}, good
    bad = wait_record(spool_root, "bad")
    assert bad["state"] == "failed" and bad["error"]["type"] == "invalid_params", bad
    message = bad["error"]["message"]
    assert "window" in message and "size" in message, message
    assert "when" not in message and "order" not in message, message
