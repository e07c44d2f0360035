"""``Client.get`` and ``Client.peek`` of a job that a cancel or a retry is moving.

A cancel moves a pending job's file into a staging name, then writes its failed record;
a retry moves the failed record out, then writes the pending job.  For that moment the
job is in no state folder, and ``get`` raised NotFoundError ("no job"): two looks in
three said so while another client cancelled and retried the job in a loop.  An
integration that takes "no job" at its word submits the job again, to run twice.
``get`` and ``peek`` look again while a move holds the job (up to a second), as ``wait``
and ``retry`` already did; ``spoolq show`` too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from spool.client import Client
from spool.errors import SpoolError
from spool.fsops import Mover
from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState

LATER = "2099-01-01T00:00:00Z"  # never due: no processor needed, none runs it


def flipping(client: Client, job_id: str, seconds: float) -> threading.Thread:
    """A thread that cancels and retries ``job_id`` again and again for ``seconds``."""
    def flip() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                client.cancel(job_id)
                client.retry(job_id)
            except SpoolError:
                pass
    thread = threading.Thread(target=flip)
    thread.start()
    return thread


def test_get_and_peek_never_say_no_job_of_a_job_being_moved(client: Client) -> None:
    client.submit(Job(tool="echo", not_before=LATER), "flip")
    other = Client(client.layout, Mover(client.layout, FsyncMode.NEVER))
    thread = flipping(other, "flip", 1.0)
    states = set()
    try:
        while thread.is_alive():
            states.add(client.get("flip").state.value)
            states.add(client.peek("flip").state.value)
    finally:
        thread.join()
    assert states == {"pending", "failed"}


def held_in_stage(client: Client, job_id: str, seconds: float) -> threading.Thread:
    """Hold the failed record of ``job_id`` where a cancel stages it, for ``seconds``: in
    no state folder, as a cancel or retry cut midway holds it."""
    record = client.layout.job(JobState.FAILED, job_id)
    staged = client.spool.mover.action_staging(f"cancel-{job_id}")
    os.rename(record, staged)
    thread = threading.Timer(seconds, os.rename, (staged, record))
    thread.start()
    return thread


def test_get_of_a_job_held_between_folders_waits_for_it(client: Client) -> None:
    client.submit(Job(tool="echo"), "held")
    client.cancel("held")
    thread = held_in_stage(client, "held", 0.3)
    try:
        assert client.get("held").state is JobState.FAILED
    finally:
        thread.join()


def test_show_of_a_job_held_between_folders_waits_for_it(client: Client) -> None:
    client.submit(Job(tool="echo"), "held")
    client.cancel("held")
    env = {**os.environ, "SPOOL_DIR": str(client.layout.root), "SPOOL_FSYNC": "never"}
    # Held for 1 s: past the CLI's start (about 0.4 s), within a second of its look.
    thread = held_in_stage(client, "held", 1.0)
    try:
        shown = subprocess.run([sys.executable, "-m", "spool.cli.main", "show", "held",
                                "--json"], env=env, capture_output=True, check=False)
    finally:
        thread.join()
    assert shown.returncode == 0, shown.stderr
    assert b'"cancelled"' in shown.stdout
