"""The warning that says how long a log write waited is a write too: a reader still slow
holds it as long, and the watchdog's pings must see that wait (QA h336)."""

from __future__ import annotations

import os
import threading
import time

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


def test_only_the_loops_wait_for_the_log_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread stuck in a write while the loop is held elsewhere had the watchdog
    fed for a hung loop (QA h336): the loop's own writes count, and its wait for the lock
    such a thread holds."""
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    buffer = logs.LineBuffer(stream)
    loop_started = threading.Event()

    def loop() -> None:
        loop_started.set()
        buffer.add("the loop's line")  # waits for the lock the stuck writer holds

    loop_thread = threading.Thread(target=loop, daemon=True)
    monkeypatch.setattr(logs, "_loop_thread", loop_thread)
    writer = threading.Thread(target=lambda: (buffer.add("x" * 200_000), buffer.flush()),
                              daemon=True)
    try:
        writer.start()  # fills the pipe nobody reads, and waits in its write
        time.sleep(0.3)
        assert writer.is_alive() and buffer.writing_since is None  # the loop waits not
        loop_thread.start()
        loop_started.wait(5)
        time.sleep(0.3)
        assert loop_thread.is_alive() and buffer.writing_since is not None
    finally:
        drained = threading.Thread(target=lambda: [None for _ in iter(
            lambda: os.read(read, 65536), b"")], daemon=True)
        drained.start()
        writer.join(10)
        loop_thread.join(10)
        stream.close()
        drained.join(10)
        os.close(read)
    assert buffer.writing_since is None
