"""A run's error message is cut to MAX_MESSAGE_CHARS, so its retry fits intake's allowance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemonkit import Daemon, drop, wait_for, wait_record

from processor.finish import LINE_MESSAGE_CHARS
from spool.text import MAX_MESSAGE_CHARS

StartDaemon = Callable[..., Daemon]


def test_a_retry_of_a_run_with_a_huge_error_message_runs(spool_root: Path,
                                                         daemon: StartDaemon) -> None:
    # The message went whole into the record and into the requeued job (1 MB here), which
    # intake forgave however large; with what it forgives bounded, the retry must still fit.
    drop(spool_root, "long", {"tool": "t_long_error", "max_attempts": 2})
    d = daemon(SPOOL_TOOLS="ptools,longerror_tools", SPOOL_MAX_JOB_BYTES="2000")
    rec = wait_record(spool_root, "long", 20)
    assert rec["attempts"] == 2, rec["error"]["message"][:200]  # the retry ran
    assert rec["error"]["type"] == "tool_error"
    message = rec["error"]["message"]
    assert len(message) <= MAX_MESSAGE_CHARS and "characters cut" in message

    # The log's lines show less, and say how much the message held (cut unsaid: QA).
    def lines() -> list[dict[str, Any]]:  # the record lands just before its line
        return [e for e in d.events() if e.get("event") in ("requeued", "failed")]

    wait_for(lambda: len(lines()) == 2, 20, "the requeued and failed lines")
    assert [e["event"] for e in lines()] == ["requeued", "failed"], lines()
    for line in lines():
        assert len(line["message"]) == LINE_MESSAGE_CHARS, line
        assert line["message_chars"] > LINE_MESSAGE_CHARS, line
