"""``spoolq show`` (and ``wait``) of a record whose result or traceback holds a character
that Python's ``str.splitlines`` takes for a line break and JSON does not: NEL (U+0085),
the line and paragraph separators (U+2028, U+2029), a form feed, FS (U+001C).

The result is shown as indented JSON cut into lines at its line breaks, by
``splitlines``, which breaks at those characters too: a string of the result went out cut
in two over two lines, the character itself gone (printable() would have shown a NEL as
``\\x85``, but only the pieces reached it).  What was shown said a newline where the
tool returned a NEL, and was no JSON a reader could take back.  orjson escapes every
newline inside a string, so the result's line breaks are its ``\\n``s alone; a
traceback's lines the same.
"""

from __future__ import annotations

from pathlib import Path

from spoolkit import done_record, make_spool, run_to_end, spoolq, submit

from spool.errors import ErrorType
from spool.models import ErrorInfo
from spool.states import JobState

ODD = "a\x85b\u2028c\u2029d\x0ce\x1cf"
SHOWN = "a\\x85b\\u2028c\\u2029d\\x0ce\\x1cf"  # as printable() escapes them
IN_JSON = "a\\x85b\\u2028c\\u2029d\\fe\\u001cf"  # orjson escapes C0 controls first


def _after(lines: list[str], label: str, count: int) -> list[str]:
    start = lines.index(label)
    return lines[start + 1:start + 1 + count]


def test_a_result_holding_a_nel_or_a_line_separator_keeps_its_string_on_one_line(
        root: Path, env: dict[str, str]) -> None:
    spool = make_spool(root)
    submit(spool, "odd")
    run_to_end(spool, "odd", result={"text": ODD})
    for command in (["show", "odd"], ["wait", "odd"]):
        shown = spoolq(env, *command)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.split("\n")  # newlines alone: the output's own line breaks
        assert _after(lines, "result", 4) == ["  {", f'    "text": "{IN_JSON}"', "  }", ""], \
            (command, lines)


def test_a_traceback_holding_a_nel_or_a_line_separator_keeps_its_lines(
        root: Path, env: dict[str, str]) -> None:
    spool = make_spool(root)
    submit(spool, "tb")
    claim = spool.claim("tb")
    assert claim is not None
    record = done_record(claim, state=JobState.FAILED)
    record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message=f"boom {ODD}",
                             traceback=f"Traceback:\n  line 1\r\nValueError: {ODD}\n")
    spool.fail(claim, record)
    shown = spoolq(env, "show", "tb")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.split("\n")
    assert _after(lines, "traceback", 4) == ["  Traceback:", "    line 1",
                                             f"  ValueError: {SHOWN}", ""], lines
    assert f"error       tool_error: boom {SHOWN}" in lines
    # A script reading the table line by line (Python's splitlines) gets one row a job.
    listed = spoolq(env, "ls")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 2, listed.stdout
