"""The walks of ``processor.proctree`` against the kernel changing the lists they read:
a thread that ends while ``children_of`` reads them (for real, 300 times over, and once
made to happen on cue), a child reaped while its list is read, a process that ends
while ``kill_descendants`` walks the tree; and the stop's kill, which now rests on them.
Each runs in a child interpreter of its own (see childkit)."""

from __future__ import annotations

from childkit import THREAD_ENDS_MID_LOOK, run_script

THREAD_ENDS = r"""
import os, signal, threading
import orjson
from processor import proctree

ENDS, IDLE = 300, 20  # threads that end; idle threads, their lists read meanwhile
started, reading, looked = threading.Event(), threading.Event(), threading.Event()
child = [0]  # started by a thread that then ends
missed: list[int] = []

def start_child_and_end():
    child[0] = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ)
    started.set()
    reading.wait()  # ends as the looker reads the children lists

def look():
    for _ in range(ENDS):
        started.wait()
        started.clear()
        reading.set()
        if child[0] not in proctree.children_of("self"):
            missed.append(child[0])
        looked.set()
        if missed:
            return

idle_end = threading.Event()
idle = [threading.Thread(target=idle_end.wait) for _ in range(IDLE)]
looker = threading.Thread(target=look)
for thread in [*idle, looker]:
    thread.start()
ends = 0
while ends < ENDS and not missed:
    reading.clear()
    thread = threading.Thread(target=start_child_and_end)
    thread.start()
    looked.wait()
    looked.clear()
    thread.join()
    os.kill(child[0], signal.SIGKILL)
    os.waitpid(child[0], 0)
    ends += 1
idle_end.set()
for thread in [*idle, looker]:
    thread.join()
print(orjson.dumps({"ends": ends, "missed": missed}).decode())
"""


def test_a_child_of_a_thread_that_ends_as_children_of_reads_is_found() -> None:
    """``children_of`` read each thread's ``children`` list, the main thread's first: a
    thread that ended after that one was read had its children moved to it by the
    kernel, and they were in no list.  Callers that took an empty answer for "no
    children left" let them outlive a worker, or the processor's stop (their own
    patches read ``waitpid`` or every process's parent pid instead)."""
    found = run_script(THREAD_ENDS)
    assert (found["missed"], found["ends"]) == ([], 300), found


ENDS_AT_ITS_READ = THREAD_ENDS_MID_LOOK + r"""
found = proctree.children_of("self")
end_thread()
children[0].kill()
children[0].wait()
print(orjson.dumps({"child": children[0].pid, "found": found}).decode())
"""


def test_a_child_of_a_thread_that_ends_as_its_list_is_opened_is_found() -> None:
    """The same, made to happen at once: the thread ends as its own list is about to be
    read (childkit), so its child is in the main thread's list only."""
    found = run_script(ENDS_AT_ITS_READ)
    assert found["found"] == [found["child"]], found


REAPED_MID_READ = r"""
import builtins, os, signal, time
import orjson
from processor import proctree

def state(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]

zombie = os.posix_spawn("/bin/true", ["true"], os.environ)
deadline = time.monotonic() + 30
while state(zombie) != "Z" and time.monotonic() < deadline:
    time.sleep(0.01)
child = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ)  # listed behind it
real_open = builtins.open
watched = f"/proc/self/task/{os.getpid()}/children"

class ReapedMidRead:
    # The list read a little at a time, the zombie reaped once its pid is read: the
    # kernel looks for the next child by its place in the list, one shorter now.
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        os.close(self.fd)
    def read(self):
        text = b""
        while len(text) < len(str(zombie)):
            text += os.read(self.fd, 1)
        os.waitpid(zombie, 0)
        while chunk := os.read(self.fd, 4096):
            text += chunk
        return text.decode()

def opening(path, *args, **kwargs):
    global watched
    if str(path) == watched:
        watched = None  # the first read only
        return ReapedMidRead(path)
    return real_open(path, *args, **kwargs)

proctree.open = opening  # shadows the builtin in proctree's lookups
found = proctree.children_of("self")
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
print(orjson.dumps({"child": child, "found": found}).decode())
"""


def test_a_child_behind_one_reaped_as_children_of_reads_is_found() -> None:
    """The kernel reads a ``children`` list one child at a time, and finds the next one
    by its place in the list once the one before it is gone: a child reaped while the
    list was read (by a tool's wait, or by the processor's reaper) made ``children_of``
    pass over the one behind it, which a kill then left running."""
    found = run_script(REAPED_MID_READ)
    assert found["found"] == [found["child"]], found


ENDS_AS_WALKED = r"""
import builtins, os, signal, subprocess, time
import orjson
from processor import proctree

proctree.prctl(proctree.PR_SET_CHILD_SUBREAPER, 1)  # as a worker, or the processor
# A tool's child that has a child of its own, and ends (at a line on its stdin) as
# kill_descendants walks the tree: between the read of this process's list and its own.
parent = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; read line"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
grandchild = int(parent.stdout.readline())
real_open = builtins.open

def state(pid):
    try:
        with real_open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"

def opening(path, *args, **kwargs):
    if str(path) == f"/proc/{parent.pid}/task/{parent.pid}/children" and parent.stdin:
        parent.stdin.close()  # it ends: the grandchild becomes this process's child
        parent.stdin = None
        deadline = time.monotonic() + 30
        while state(parent.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
    return real_open(path, *args, **kwargs)

proctree.open = opening  # shadows the builtin in proctree's lookups
killed = proctree.kill_descendants(os.getpid())
deadline = time.monotonic() + 10  # a zombie at once once killed
while state(grandchild) != "Z" and time.monotonic() < deadline:
    time.sleep(0.01)
left = state(grandchild)
if left != "Z":
    os.kill(grandchild, signal.SIGKILL)
os.waitpid(grandchild, 0)
parent.wait()
parent.stdout.close()
print(orjson.dumps({"killed": killed, "grandchild": grandchild, "state": left}).decode())
"""


def test_a_child_of_one_that_ends_as_kill_descendants_walks_is_killed() -> None:
    """``kill_descendants`` walked the tree again until a walk found no process alive; a
    process that ended while it was walked (one killed at the walk before, still dying)
    handed its children to the subreaper above it after that one's list was read, and
    the walk found it ended and nothing alive: the children outlived the kill."""
    found = run_script(ENDS_AS_WALKED)
    assert (found["state"], found["killed"]) == ("Z", [found["grandchild"]]), found


SPARES_HELPERS = r"""
import multiprocessing, os, subprocess, time
import orjson
from processor import proctree

worker = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(60,))
worker.start()  # the forkserver's child, as a COMPUTE worker is
child = subprocess.Popen(["sleep", "60"])  # what a FAST tool started
killed = proctree.kill_tool_processes()
helpers = sorted(proctree.mp_helpers())
spared = [pid for pid in [*helpers, worker.pid] if proctree._alive(pid)]
status = child.wait(10)
worker.kill()
worker.join()
print(orjson.dumps({"killed": killed, "child": child.pid, "status": status,
                    "helpers": helpers, "worker": worker.pid, "spared": spared}).decode())
"""


def test_the_stop_kills_the_tools_processes_and_spares_the_multiprocessing_helpers() -> None:
    """The stop's kill walks the tree below the processor now (``kill_descendants``), not
    its children one at a time: the forkserver and the resource tracker, and the workers
    below the forkserver (the pool stops those), are still left alone."""
    found = run_script(SPARES_HELPERS)
    assert (found["killed"], found["status"]) == ([found["child"]], -9), found
    assert len(found["helpers"]) == 2, found
    assert found["spared"] == [*found["helpers"], found["worker"]], found
