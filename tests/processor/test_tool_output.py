"""A tool's own output in the processor's log: JSON lines naming the job, never plain
text between them.  Real daemons (see daemonkit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_what_tools_print_becomes_json_lines_naming_the_job(
        spool_root: Path, daemon: StartDaemon, level: str) -> None:
    """A tool's print() (or sys.stdout / sys.stderr write), in a COMPUTE worker or a
    FAST tool, came out as plain text between the JSON lines, which `jq` stops at and
    no `select(.id=="ID")` finds; it is now a line of its own, whatever the log level."""
    d = daemon(SPOOL_TOOLS="ptools,printtools", SPOOL_LOG_LEVEL=level)
    for job_id, tool in (("fast", "p_fast"), ("compute", "p_compute")):
        drop(spool_root, job_id, {"tool": tool})
    for job_id in ("fast", "compute"):
        assert wait_record(spool_root, job_id)["state"] == "done"
    assert d.stop() == 0
    lines = d.logs().splitlines()
    assert [line for line in lines if not line.startswith("{")] == []
    entries = [orjson.loads(line) for line in lines]
    for job_id, tool in (("fast", "p_fast"), ("compute", "p_compute")):
        printed = [(e["stream"], e["msg"]) for e in entries
                   if e["logger"] == "spoolq.output" and e.get("id") == job_id]
        assert printed == [
            ("stdout", f"hello from {job_id}"),
            ("stderr", "hello on stderr in two words"),
            ("stdout", "a line in two writes"),
            ("stdout", "and a last one without a newline"),
        ]
        assert {e["tool"] for e in entries if e.get("id") == job_id
                and e["logger"] == "spoolq.output"} == {tool}


def test_output_without_newlines_is_written_in_bounded_lines_not_held_whole(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A tool writing dots a few at a time, never a newline, had its whole output held
    and copied again on every write (quadratic: 2 MB in 100,000 writes took longer than
    the tool's 30 s timeout), then logged as one line cut at 16 KiB; now held text is
    written as a line once it reaches the log's line limit, and no dot is lost."""
    d = daemon(SPOOL_TOOLS="ptools,printtools")
    drop(spool_root, "dots", {"tool": "p_dots"})
    rec = wait_record(spool_root, "dots", timeout=60)
    assert (rec["state"], rec.get("error")) == ("done", None)
    assert d.stop() == 0
    printed = [e["msg"] for e in map(orjson.loads, d.logs().splitlines())
               if e["logger"] == "spoolq.output" and e.get("id") == "dots"]
    assert "".join(printed) == "." * 2_000_000
    assert max(map(len, printed)) <= 16_384


def test_a_tool_writing_bytes_to_stdout_buffer_runs_and_is_logged(
        spool_root: Path, daemon: StartDaemon) -> None:
    """sys.stdout.buffer (a TextIOWrapper's, which tools write bytes to) was missing
    once output was captured: the tool failed AttributeError.  Its bytes are now log
    lines too, decoded as UTF-8 (what is not UTF-8 shows as U+FFFD)."""
    d = daemon(SPOOL_TOOLS="ptools,printtools")
    drop(spool_root, "bin", {"tool": "p_binary"})
    rec = wait_record(spool_root, "bin")
    assert (rec["state"], rec.get("error")) == ("done", None)
    assert d.stop() == 0
    printed = [(e["stream"], e["msg"]) for e in map(orjson.loads, d.logs().splitlines())
               if e["logger"] == "spoolq.output" and e.get("id") == "bin"]
    assert printed == [("stdout", "hello in bytes \xe9"), ("stdout", "not utf-8: \ufffd")]
