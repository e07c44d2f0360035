"""The warning that says how long a log write waited is a write too: a reader still slow
holds it as long, and the watchdog's pings must see that wait (QA h336)."""

from __future__ import annotations

import pytest

from processor import logs


class _SlowReader:
    """A stream whose first write takes long; each write notes whether the wait shows."""

    def __init__(self, buffer: list[logs.LineBuffer]) -> None:
        self.buffer = buffer
        self.seen: list[float | None] = []

    def write(self, text: str) -> None:
        self.seen.append(self.buffer[0].writing_since)

    def flush(self) -> None:
        pass


def test_the_waited_warning_is_written_as_a_wait_the_pings_see(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "WAIT_SAID_S", 0.0)  # every write "waited"
    holder: list[logs.LineBuffer] = []
    stream = _SlowReader(holder)
    buffer = logs.LineBuffer(stream)  # type: ignore[arg-type]
    holder.append(buffer)
    buffer.add("a line")
    buffer.flush()
    assert len(stream.seen) == 2  # the lines, then the warning
    assert all(since is not None for since in stream.seen), stream.seen
    assert buffer.writing_since is None
