"""The stop's kill of what FAST tools started (``processor.proctree.kill_tool_processes``)
against a thread that ends while it looks: run in a subprocess of its own, since the kill
takes every child of the process that calls it."""

from __future__ import annotations

from childkit import CHILD_STATUS, THREAD_ENDS_MID_LOOK, run_script

SCRIPT = THREAD_ENDS_MID_LOOK + r"""
killed = proctree.kill_tool_processes()
end_thread()
child = children[0]
""" + CHILD_STATUS + r"""
print(orjson.dumps({"killed": killed, "child": child.pid, "status": status}).decode())
"""


def test_a_child_of_a_thread_that_ends_as_the_stop_looks_is_killed() -> None:
    """A stop killed only the FAST tools' processes it found in each thread's ``children``
    list; the loop thread, which ran the tools and started them, ends as the processor
    stops, and a child the kernel moved to the main thread after that thread's list was
    read was in no list, and outlived the stop (sleep children of ``s_fast_child`` left
    running, once in a full run of the suite)."""
    found = run_script(SCRIPT)
    assert (found["killed"], found["status"]) == ([found["child"]], -9), found
