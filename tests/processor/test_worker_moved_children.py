"""A COMPUTE worker's kill of what a job left running (``processor.worker.reap_leftovers``)
against a tool's thread that ends while it looks: run in a subprocess of its own, since
the kill takes every child of the process that calls it."""

from __future__ import annotations

from childkit import THREAD_ENDS_MID_LOOK, run_script

SCRIPT = THREAD_ENDS_MID_LOOK + r"""
worker.reap_leftovers()
end_thread()
child = children[0].pid
try:
    with real_open(f"/proc/{child}/stat") as fh:
        state = fh.read().rsplit(")", 1)[1].split()[0]
except FileNotFoundError:
    state = "reaped"
if state != "reaped":
    children[0].kill()
    children[0].wait()
print(orjson.dumps({"child": child, "state": state}).decode())
"""


def test_a_child_of_a_tool_thread_that_ends_as_the_worker_looks_is_killed_and_reaped(
) -> None:
    """A worker killed what a job left running from each thread's ``children`` list;
    a thread the tool started that ended while the lists were read had its child
    moved to the main thread after that one's list was read: in no list, it was taken
    for none left, and ran on beside the worker's next job."""
    found = run_script(SCRIPT)
    assert found["state"] == "reaped", found
