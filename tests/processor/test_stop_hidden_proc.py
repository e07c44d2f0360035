"""The stop's kill of what FAST tools started (``processor.proctree.kill_tool_processes``)
where ``/proc`` hides other users' processes (``hidepid=noaccess``, systemd's
``ProtectProc=noaccess``): run in a subprocess of its own, since the kill takes every
child of the process that calls it."""

from __future__ import annotations

from childkit import CHILD_STATUS, run_script

SCRIPT = r"""
import builtins, errno, os, subprocess
import orjson
from processor import proctree

child = subprocess.Popen(["sleep", "60"])  # what a FAST tool started
ours = {os.getpid(), child.pid}
real_open = builtins.open

def opening(path, *args, **kwargs):
    # /proc mounted hidepid=noaccess, the processor not root: another user's
    # /proc/<pid>/ is listed, but a look inside it is refused (EPERM).
    parts = str(path).split("/")
    if parts[1:2] == ["proc"] and parts[2].isdigit() and int(parts[2]) not in ours:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
    return real_open(path, *args, **kwargs)

proctree.open = opening  # shadows the builtin in proctree's lookups
try:
    killed, error = proctree.kill_tool_processes(), None
except OSError as exc:
    killed, error = [], repr(exc)
""" + CHILD_STATUS + r"""
print(orjson.dumps({"killed": killed, "child": child.pid, "status": status,
                    "error": error}).decode())
"""


def test_a_stop_where_proc_hides_other_users_processes_kills_the_tools_children() -> None:
    """The stop read the parent of every process on the host; a process of another
    user whose ``/proc`` entry refused the look (EPERM, under ``hidepid=noaccess`` for
    the ``spoolq`` user) raised out of the kill: the stop crashed before it removed the
    status file and the lease, and what FAST tools started outlived it."""
    found = run_script(SCRIPT)
    assert (found["error"], found["killed"], found["status"]) == (
        None, [found["child"]], -9), found
