"""The processor's JSON-lines log: batching, and lines that can never crash the daemon."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from processor import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    logs.setup_logging("info", out)
    yield out
    logs.flush()
    root.handlers[:], root.level = saved
    logs._buffer = None


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_transitions_wait_for_a_flush_and_keep_their_order(stream: io.StringIO) -> None:
    logs.transition("claimed", id="a", attempt=1)
    logs.transition("done", id="a", attempt=1)
    assert stream.getvalue() == ""
    logs.flush()
    got = lines(stream)
    assert [(e["event"], e["id"]) for e in got] == [("claimed", "a"), ("done", "a")]
    assert all(e["logger"] == "spoolq.transitions" and e["ts"].endswith("Z") for e in got)


def test_warnings_are_written_at_once(stream: io.StringIO) -> None:
    logs.transition("claimed", id="b")
    logging.getLogger("spoolq.processor").warning("disk trouble")
    assert [e["msg"] for e in lines(stream)] == ["claimed", "disk trouble"]


def test_a_file_name_that_is_not_utf8_is_escaped_not_fatal(stream: io.StringIO) -> None:
    name = b"bad-\xff.json".decode("utf-8", "surrogateescape")
    logs.transition("quarantined", id="invalid-1", source=name, nested=["x\ud800"])
    logging.getLogger("spoolq.processor").info("seen %s", name)
    logs.flush()
    got = lines(stream)
    assert got[0]["source"] == "bad-\\xff.json" and got[0]["nested"] == ["x\\ud800"]
    assert got[1]["msg"] == "seen bad-\\xff.json"


def test_a_huge_message_or_traceback_is_cut_to_one_journald_line(stream: io.StringIO) -> None:
    log = logging.getLogger("spoolq.processor")
    log.warning("x" * 200_000)
    try:
        raise ValueError("y" * 100_000)
    except ValueError:
        log.exception("failed")
    first, second = lines(stream)
    assert first["truncated"] is True and first["msg"] == "x" * logs.MAX_TEXT
    assert second["truncated"] is True and len(str(second["exc"])) == logs.MAX_TEXT
    assert str(second["exc"]).rstrip().endswith("y"), "the end of the traceback is kept"
    assert all(len(line) < 48_000 for line in stream.getvalue().splitlines())
