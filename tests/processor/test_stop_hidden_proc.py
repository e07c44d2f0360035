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


HIDES = r"""
import builtins, errno, os, subprocess, time
import orjson
from processor import proctree

proctree.prctl(proctree.PR_SET_CHILD_SUBREAPER, 1)  # as the processor is
real_open = builtins.open
hidden = set()

def state(pid):
    try:
        with real_open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"

def opening(path, *args, **kwargs):
    # /proc mounted hidepid=noaccess, the processor not root: a process of its own user
    # that made itself non-dumpable (ssh-agent, gpg-agent do) is listed in its parent's
    # children, but a look inside its /proc entry is refused (EPERM), zombie or not.
    parts = str(path).split("/")
    if parts[1:2] == ["proc"] and parts[2].isdigit() and int(parts[2]) in hidden:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
    return real_open(path, *args, **kwargs)

def ended(pid):
    # How the hidden one ended once this process (its subreaper) has it: None if it runs on.
    deadline = time.monotonic() + 10
    while state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    if state(pid) != "Z":
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return None
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

proctree.open = opening  # shadows the builtin in proctree's lookups
"""

STOP_WITH_A_HIDDEN_DESCENDANT = HIDES + r"""
child = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
hidden.add(int(child.stdout.readline()))  # what a FAST tool started, and its child
child.stdout.close()
try:
    killed, error = proctree.kill_tool_processes(), None
except OSError as exc:
    killed, error = [], repr(exc)
""" + CHILD_STATUS + r"""
print(orjson.dumps({"killed": sorted(killed), "child": child.pid, "status": status,
                    "hidden": [*hidden], "hidden_status": ended(*hidden),
                    "error": error}).decode())
"""


def test_a_stop_kills_a_tools_descendant_that_proc_hides() -> None:
    """The stop's kill walks every process below the processor now, and looks at each
    one's state: under ``hidepid=noaccess`` a descendant of the processor's own user that
    made itself non-dumpable (an ``ssh-agent`` a tool started) refuses the look (EPERM),
    which got out of the kill before it killed anything: the stop crashed before it
    removed the status file and the lease, and the tool's processes outlived it.  (Seen
    for real: /proc mounted ``hidepid=1`` in a mount namespace, the processor without
    CAP_SYS_PTRACE nor /proc's group.)"""
    found = run_script(STOP_WITH_A_HIDDEN_DESCENDANT)
    assert found["error"] is None, found
    assert found["killed"] == sorted([found["child"], *found["hidden"]]), found
    assert (found["status"], found["hidden_status"]) == (-9, -9), found


REAPS_WITH_A_HIDDEN_ORPHAN = HIDES + r"""
proctree.ADOPTED_GRACE_S = 0.0  # an exited orphan is reaped at the first pass that sees it
# A tool's daemon (a double fork): adopted by this process, listed under its main thread.
said = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                      capture_output=True, check=True)
orphan = int(said.stdout)
hidden.add(orphan)
deadline = time.monotonic() + 10
while orphan not in proctree.children_of("self") and time.monotonic() < deadline:
    time.sleep(0.01)
reaped, error = [], None
try:
    reaped.append(proctree.Reaper().reap(time.monotonic()))  # it runs: none
    os.kill(orphan, 9)
    while state(orphan) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    reaped.append(proctree.Reaper().reap(time.monotonic()))  # it has exited: reaped
except OSError as exc:
    error = repr(exc)
left = state(orphan)
if left != "gone":
    os.kill(orphan, 9)
    os.waitpid(orphan, 0)
print(orjson.dumps({"reaped": reaped, "error": error, "left": left}).decode())
"""


def test_the_reaper_reaps_an_adopted_orphan_that_proc_hides_once_it_exits() -> None:
    """The processor's reaper (each periodic scan) reads the state of every orphan it
    adopted: one that ``hidepid=noaccess`` hides (a daemon a FAST tool started that made
    itself non-dumpable) refused the read (EPERM), and the error got out of the scan and
    crashed the processor (a traceback, exit 1) at the first scan after such a tool ran.
    Hidden, it is asked of the kernel as its parent, and reaped once it has exited."""
    found = run_script(REAPS_WITH_A_HIDDEN_ORPHAN)
    assert found == {"reaped": [0, 1], "error": None, "left": "gone"}, found
