"""The processor's end of a worker channel: reads never block, 0 at end of file, and
writes of more than a pipe holds go through whole (processor.channel)."""

from __future__ import annotations

import pickle
import threading

import pytest

from processor.channel import complete_messages, frame_header, open_channel


def test_reads_never_block_and_end_of_file_reads_zero() -> None:
    parent, child = open_channel()
    try:
        buffer = bytearray(1 << 16)
        with pytest.raises(BlockingIOError):  # nothing sent yet: no wait
            parent.recv_into(buffer)
        child.send_bytes(pickle.dumps(("done", 1)))
        size = parent.recv_into(buffer)
        assert complete_messages(bytearray(buffer[:size])) == [("done", 1)]
        child.close()  # the worker is gone
        assert parent.recv_into(buffer) == 0
    finally:
        parent.close()


def test_a_task_larger_than_a_pipe_arrives_whole() -> None:
    parent, child = open_channel()
    task = ("t", "x" * (3 << 20))
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(child.recv()), daemon=True)
    reader.start()
    try:
        data = pickle.dumps(task)
        parent.sendall(frame_header(len(data)) + data)  # blocks until the reader has it
        reader.join(30)
        assert got == [task]
    finally:
        parent.close()
        child.close()
