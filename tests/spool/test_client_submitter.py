"""The Python client run by a member of the submit group only (docs/operations.md,
"Permissions"): it may drop jobs, and may not read ``running/``, ``done/`` or
``failed/`` (made as in test_cli_permissions.py).

Its ``get``, ``wait``, ``list``, ``stats`` and ``cancel`` raised a bare PermissionError,
outside the exception tree (:mod:`spool.errors`: EACCES is a SpoolIOError), so an
integration that catches SpoolError died of a traceback.  A forked child takes the
user's uid and groups, as the CLI's permission tests do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from spoolkit import NOBODY, load_spool, needs_root
from test_cli import drop, finish

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.states import JobState

SUBMITTER, SPOOL_GROUP = 54321, 54322


def as_submitter(root: Path) -> dict[str, str]:
    """Each client call's outcome, made by SUBMITTER in group nogroup only: 'ok' or the
    exception's class name."""
    assert NOBODY is not None
    load_spool()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgroups([NOBODY[1]])
            os.setgid(NOBODY[1])
            os.setuid(SUBMITTER)
            layout = Layout(root)
            client = Client(layout, Mover(layout, "always"))
            calls = {
                "submit": lambda: client.submit(Job(tool="echo"), "mine"),
                "get": lambda: client.get("d1"),
                "wait": lambda: client.wait("d1", timeout=0.5),
                "list": client.list,
                "stats": client.stats,
                "cancel": lambda: client.cancel("d1", wait_s=0.2),
            }
            out = {}
            for name, call in calls.items():
                try:
                    call()
                    out[name] = "ok"
                except Exception as exc:  # what escapes is what is tested
                    out[name] = type(exc).__name__
            os.write(write, orjson.dumps(out))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return orjson.loads(data)


@needs_root
def test_a_submitters_client_raises_spool_errors_only(open_dir: Path) -> None:
    root = open_dir / "spool"
    assert NOBODY is not None
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--system", "--user",
                    "nobody", "--group", "nogroup", "--spool-dir", str(root)],
                   check=True, capture_output=True)
    drop(root, "d1")
    finish(root, "d1", JobState.DONE, {"message": "hi"})
    for name in ("running", "done", "failed", "progress", "cancel", "owners"):
        os.chown(root / name, -1, SPOOL_GROUP)  # the spool's own group, not the submitters'
    outcome = as_submitter(root)
    assert outcome == {"submit": "ok", "get": "SpoolIOError", "wait": "SpoolIOError",
                       "list": "SpoolIOError", "stats": "SpoolIOError",
                       "cancel": "SpoolIOError"}
    assert (root / "pending" / "mine.json").exists()
