"""A pending drop holding an integer past 64 bits, cancelled before intake saw it.

With no processor running, ``spoolq cancel`` of such a drop (which ``spoolq ls``
lists) said "unexpected TypeError: Integer exceeds 64-bit range (a bug in
spoolq)", and left the job staged in ``tmp/``: gone from ``pending/``, with no
record. pydantic reads the number exactly and orjson cannot write the record.
"""

from __future__ import annotations

import os
from pathlib import Path

from spoolkit import drop_raw, listing, read_json, spoolq

from spool.layout import Layout
from spool.states import JobState

RAW = b'{"tool": "echo", "params": {"message": 98765432109876543210}}'


def test_cancel_of_a_pending_drop_with_an_integer_past_64_bits(env: dict[str, str],
                                                                root: Path) -> None:
    layout = Layout(root)
    drop_raw(layout, "big.json", RAW)
    proc = spoolq(env, "cancel", "big")
    assert proc.returncode == 0, proc.stderr
    assert "a bug in spoolq" not in proc.stderr
    assert listing(layout.tmp) == [] and listing(layout.folder(JobState.PENDING)) == []
    record = read_json(layout.job(JobState.FAILED, "big"))
    assert record["error"]["type"] == "cancelled"
    assert not os.path.lexists(layout.job(JobState.DONE, "big"))
