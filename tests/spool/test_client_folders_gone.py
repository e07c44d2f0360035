"""A long-lived client (an integration's, statusd's) whose spool folders went away.

A ``Client`` checks the spool when it is made; one kept for hours outlives that check
(a spool whose filesystem was unmounted, folders removed by hand).  Its submit into a
spool whose ``pending/`` is gone said ``ConflictError: job ... is already pending``:
the integration took the job for submitted and it was nowhere.  With ``tmp/`` gone,
submit and cancel raised a bare ``FileNotFoundError``, outside the exception tree.
Each is a :class:`SpoolIOError` naming the missing folder now, and nothing moved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from spoolkit import make_client

from spool.client import Client
from spool.errors import ConflictError, SpoolIOError
from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return make_client(tmp_path / "spool", FsyncMode.ALWAYS)


def files(client: Client) -> list[str]:
    root = client.layout.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("folder", ["pending", "tmp"])
def test_a_submit_into_a_spool_without_its_folder_says_so(client: Client,
                                                          folder: str) -> None:
    shutil.rmtree(client.layout.root / folder)
    with pytest.raises(SpoolIOError, match=folder) as caught:
        client.submit(Job(tool="echo"), "j1")
    assert not isinstance(caught.value, ConflictError)
    assert files(client) == []


def test_a_submit_over_a_pending_job_is_still_a_conflict(client: Client) -> None:
    client.submit(Job(tool="echo"), "j1")
    with pytest.raises(ConflictError, match="already pending"):
        client.submit(Job(tool="echo"), "j1")


def test_a_cancel_without_tmp_says_so_and_leaves_the_job_pending(client: Client) -> None:
    client.submit(Job(tool="echo"), "j1")
    shutil.rmtree(client.layout.root / "tmp")
    with pytest.raises(SpoolIOError, match="tmp"):
        client.cancel("j1", wait_s=0.2)
    assert client.get("j1").state is JobState.PENDING
    assert files(client) == ["pending/j1.json"]


def test_a_retry_without_pending_says_so_and_keeps_the_record(client: Client) -> None:
    client.submit(Job(tool="echo"), "j1")
    client.cancel("j1")
    shutil.rmtree(client.layout.root / "pending")
    with pytest.raises(SpoolIOError, match="pending"):
        client.retry("j1")
    assert client.get("j1").state is JobState.FAILED
    assert files(client) == ["failed/j1.json"]


def test_a_retry_without_tmp_says_so_not_that_another_retries(client: Client) -> None:
    client.submit(Job(tool="echo"), "j1")
    client.cancel("j1")
    shutil.rmtree(client.layout.root / "tmp")
    with pytest.raises(SpoolIOError, match="tmp"):
        client.retry("j1")
    assert files(client) == ["failed/j1.json"]
