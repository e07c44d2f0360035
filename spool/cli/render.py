"""What ``spoolq`` writes to stdout: JSON for scripts, tables and summaries for people.

JSON records are :func:`spool.models.record_bytes`, the encoding ``done/`` and
``failed/`` hold and statusd serves, so a script sees the same fields from
every door (UTC timestamps with ``Z``).  Text output shows timestamps in UTC
too, so a table and a record file never disagree about a time.

Text output is for a terminal, and a job file's strings come from whoever could
write to ``pending/``: control characters (an escape sequence, a newline that
would forge a table row) are shown as escapes (:func:`printable`).
"""

from __future__ import annotations

import codecs
import math
import re
import sys
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, cast

import orjson

from spool.errors import ConflictError, ErrorType
from spool.states import JobState
from spool.text import valid_strings, valid_text

if TYPE_CHECKING:
    from spool.large import LargeRecord
    from spool.models import EarlierError, Record

_JSON = orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
RESULT_LINES = 40
DETAIL_CHARS = 60


# -- JSON -----------------------------------------------------------------------------------


def emit_json(value: Any) -> None:
    try:
        text = orjson.dumps(value, option=_JSON, default=str)
    except orjson.JSONEncodeError:  # a path argument with bytes that are not UTF-8
        text = orjson.dumps(valid_strings(value), option=_JSON, default=str)
    sys.stdout.write(json_text(text) + "\n")


_NON_ASCII = re.compile("[^\x00-\x7f]")


def json_text(data: bytes) -> str:
    """orjson's ``data`` as text stdout can carry whatever its encoding.

    Where stdout is not UTF-8 (``LC_ALL=C`` with ``PYTHONUTF8=0``, ``PYTHONIOENCODING=
    ascii`` or ``latin-1``), a record holding "é" or "✓" stopped ``show --json``, ``ls
    --json`` and ``wait`` with "unexpected UnicodeEncodeError" and exit 1 (to ``wait``:
    the job failed).  There every character past ASCII is written as its JSON escape
    (``\\u00e9``, a surrogate pair past U+FFFF): the same JSON, in any encoding.  orjson
    writes such characters only inside strings, where the escapes are valid."""
    text = data.decode()
    if utf8_out():
        return text
    return _NON_ASCII.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def utf8_out() -> bool:
    """Whether stdout's encoding is UTF-8 (not a stream that names none)."""
    return utf8_codec(getattr(sys.stdout, "encoding", None) or "utf-8")


def utf8_codec(encoding: str) -> bool:
    """Whether ``encoding`` names UTF-8 (``UTF8``, ``utf_8``)."""
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


class _Escaped:
    """A binary stdout that is not UTF-8, for a large record's file copied to it: each
    character past ASCII as its JSON escape, as :func:`json_text` writes a small record's
    (written as stored, "é" reached a latin-1 or ASCII reader as 'Ã©' or was refused).
    A character cut by the copy's chunks waits for its rest."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes) -> int:
        text = self.decoder.decode(data)
        self.out.write(_NON_ASCII.sub(_json_escape, text).encode("ascii"))
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def record_json(record: Record) -> dict[str, Any]:
    """The record as the spool stores it and statusd serves it."""
    from spool.models import record_bytes  # noqa: PLC0415 - lazy, see spool.cli

    data: dict[str, Any] = orjson.loads(record_bytes(record))
    return data


def listed_json(record: Record, large: LargeRecord | None) -> dict[str, Any]:
    """A record in ``ls --json``: one read from its head (``large``) goes without its
    result, marked as statusd's list marks it (and ``fields_omitted`` when a field before
    the result did not end within the head)."""
    data = record_json(record)
    if large is not None:
        data.pop("result", None)
        data["result_omitted"] = True
        if not large.complete:
            data["fields_omitted"] = True
    return data


class ToolLimits(NamedTuple):
    """What ``spoolq show`` says of a record's tool, as the live processors give it."""

    attempts: int | None
    """The attempt limit, for a job that sets no ``max_attempts``."""
    timeout: float | None
    """The tool's time limit, which a job's longer ``timeout`` is clamped to."""


_NO_LIMITS = ToolLimits(None, None)


def show_record(record: Record, as_json: bool, large: LargeRecord | None = None, *,
                limits: ToolLimits | None = None) -> None:
    """``show``/``wait``'s output.  A record too large to read whole (``large``, see
    :mod:`spool.large`): ``--json`` writes its file as stored, a chunk at a time; the
    text shows its leading fields and the record's size in place of the result.
    ``limits``: those of the record's tool (:func:`spool.cli.catalog.shown_limits`);
    the JSON is the record as stored."""
    if large is not None and as_json:
        from spool.large import copy_record  # noqa: PLC0415 - lazy, see spool.cli

        sys.stdout.flush()
        out = sys.stdout.buffer if utf8_out() else cast(BinaryIO, _Escaped(sys.stdout.buffer))
        if not copy_record(large, out):
            raise ConflictError(f"job {record.id}'s record changed while it was read; "
                                "run the command again")
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
    elif as_json:
        emit_json(record_json(record))
    else:
        print("\n".join(record_lines(record, large, limits=limits)))


# -- small formats --------------------------------------------------------------------------


def human_duration(seconds: float | None) -> str:
    """``0.25s``, ``42.0s``, ``3.1m``, ``2.5h``, ``14.0d``: short enough for a table cell."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    # Each unit up to where its figure, rounded, reaches the next (59.99 is 1.0m, never
    # 60.0s; 86,399 is 1.0d, never 24.0h).
    if round(seconds, 2) < 10:
        return f"{seconds:.2f}s"
    for unit, size, upto in (("s", 1, 60), ("m", 60, 60), ("h", 3600, 24)):
        if round(seconds / size, 1) < upto:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds / 86_400:.1f}d"


def when(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    utc = ts.astimezone(UTC)
    # The year by hand: glibc's %Y does not pad one before 1000 (a job may say year 1).
    return f"{utc.year:04d}{utc:-%m-%d %H:%M:%S}Z"


def compact(value: Any, limit: int = 200) -> str:
    text = orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z).decode()
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# Control characters, undecodable bytes (lone surrogates), and the characters that change
# how the text around them reads without being seen: the Arabic letter mark, zero-width
# ones, bidi embeddings, overrides and isolates (U+202E shows "evil" as "live"), the BOM.
# The dashboard escapes the same set (statusd/static/app.js, HIDDEN_CHARS), less the line
# and paragraph separators (U+2028, U+2029): a page has no lines to cut, a script reading
# spoolq's output line by line (``splitlines``) cuts at them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                          "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe for a terminal and one line: control characters, invisible and bidi
    characters and the line separators as Python escapes (``\\x1b``, ``\\n``,
    ``\\u202e``, ``\\u2028``), and undecodable bytes as
    :func:`spool.text.valid_text` writes them (``\\xff``, as the daemons' lines do): as
    ``\\udcff`` an error line named a folder no ``$'...'`` pasted from it reaches."""
    return _UNPRINTABLE.sub(lambda m: valid_text(m.group()) if "\ud800" <= m.group() <= "\udfff"
                            else ascii(m.group())[1:-1], text)


def printable_path(text: str) -> str:
    """A line naming a path on stdout: :func:`printable`, but a byte of the name that is
    not UTF-8 (a surrogate here) left for the stream to write as that byte, so that the
    name printed is the folder's (``spoolq init`` of ``sp\\xffool``)."""
    return "".join(part if "\ud800" <= part[:1] <= "\udfff" else printable(part)
                   for part in _SURROGATES.split(text))


_SURROGATES = re.compile("([\ud800-\udfff]+)")


def cells(text: str) -> int:
    """How many terminal columns :func:`printable` text takes: East Asian wide and
    full-width characters two, combining marks none, the rest one."""
    return sum(0 if unicodedata.combining(char) else
               2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def fit(text: str, columns: int) -> str:
    """The longest start of ``text`` that takes at most ``columns`` terminal columns."""
    used = 0
    for i, char in enumerate(text):
        used += cells(char)
        if used > columns:
            return text[:i]
    return text


def pad(text: str, columns: int) -> str:
    """``text`` with spaces after it up to ``columns`` terminal columns (``str.ljust`` by
    columns, not characters)."""
    return text + " " * max(0, columns - cells(text))


def as_written(text: str, encoding: str) -> str:
    """``text`` as a stdout in ``encoding`` (not UTF-8) writes it: what the encoding lacks
    as escapes (``\\xe9``).  ``ls`` padded a tool named "✓tést" as 5 columns, then stdout
    wrote '\\u2713t\\xe9st': the columns after it stood off from the header's."""
    return text.encode(encoding, "backslashreplace").decode(encoding)


def table(header: list[str], rows: list[list[str]]) -> str:
    # Whether stdout escapes is asked once a table, not once a cell (a page of 1,000 rows).
    encoding = None if utf8_out() else sys.stdout.encoding
    rows = [[printable(cell) if encoding is None else as_written(printable(cell), encoding)
             for cell in row] for row in rows]
    widths = [max(cells(cell) for cell in column)
              for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(pad(cell, w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in [header, *rows])


# -- records --------------------------------------------------------------------------------


def elapsed_s(record: Record, now: datetime | None = None) -> float | None:
    """How long the job has been running (or waiting, when pending)."""
    since = record.started_at if record.state is JobState.RUNNING else record.submitted_at
    if since is None:
        return None
    return max(0.0, ((now or datetime.now(UTC)) - since).total_seconds())


def time_cell(record: Record) -> str:
    """Duration when finished; progress and run time while running; '-' while pending."""
    if record.state is JobState.RUNNING:
        elapsed = human_duration(elapsed_s(record))
        fraction = record.progress.fraction if record.progress else None
        return elapsed if fraction is None else f"{fraction:.0%} {elapsed}"
    if record.state is JobState.PENDING:
        return "-"
    return human_duration(record.duration_s)


LIST_HEADER = ["ID", "STATE", "TOOL", "SUBMITTED (UTC)", "TIME", "ERROR"]
UNREADABLE = "unreadable record"


def record_row(record: Record) -> list[str]:
    """A row of ``spoolq ls``, in the order of :data:`LIST_HEADER`."""
    error = ""
    if record.unreadable is not None:
        error = UNREADABLE
    elif record.state is JobState.FAILED and record.error is not None:
        error = record.error.type.value
    return [record.id, record.state.value, tool_name(record.tool), when(record.submitted_at),
            time_cell(record), error]


def tool_name(tool: str | None) -> str:
    """A record's tool as ``ls`` and ``show`` print it: cut to what a tool's name may be
    (a quarantined drop's "tool" of 1 MiB made every row of its page as wide, QA), in
    the columns it takes as :func:`printable` shows it: 128 bidi overrides or zero-width
    spaces, each shown as ``\u202e``, still made each row of the page 800 columns wide,
    and 128 CJK characters 256 (h401)."""
    from spool.models import MAX_TOOL_NAME  # noqa: PLC0415 - lazy, see spool.cli

    if tool is None:
        return "-"
    if len(tool) <= MAX_TOOL_NAME and cells(printable(tool)) <= MAX_TOOL_NAME:
        return tool
    end = used = 0
    for char in tool[:MAX_TOOL_NAME]:
        used += cells(printable(char))
        if used > MAX_TOOL_NAME:
            break
        end += 1
    return f"{tool[:end]}... ({len(tool):,} characters)"


def record_lines(record: Record, large: LargeRecord | None = None, *,
                 limits: ToolLimits | None = None) -> list[str]:
    """``spoolq show``: every field a person looks for, in the order they look (of a
    record too large to read whole, the fields before its result).  ``limits``: its
    tool's, when known: the attempt limit of a job that sets no ``max_attempts``, and
    the time limit a longer ``timeout`` is clamped to (DESIGN section 9)."""
    lines = [f"id          {record.id}", f"state       {record.state.value}",
             f"tool        {tool_name(record.tool)}"]
    if record.params:
        lines.append(f"params      {compact(record.params)}")
    lines += _scheduling_lines(record, limits or _NO_LIMITS)
    lines += _run_lines(record)
    if record.meta:
        lines.append(f"meta        {compact(record.meta)}")
    lines += _outcome_lines(record) if large is None else _large_lines(record, large)
    return [printable(line) for line in lines]


def _scheduling_lines(record: Record, limits: ToolLimits) -> list[str]:
    attempts = f"{record.attempts}"
    if record.max_attempts is not None:
        attempts += f" of {record.max_attempts}"
    elif limits.attempts is not None:  # the processor's limit for a job that sets none
        attempts += f" of {limits.attempts} (the tool's limit)"
    lines = [f"priority    {record.priority}", f"attempts    {attempts}"]
    if record.timeout is not None:
        timeout = f"{record.timeout:g} s"
        if limits.timeout is not None and record.timeout > limits.timeout:
            # Clamped to it (DESIGN section 9): "50 s" beside a timeout at 1 s (QA).
            timeout += f" (clamped to the tool's {limits.timeout:g} s)"
        lines.append(f"timeout     {timeout}")
    lines.append(f"submitted   {when(record.submitted_at)}")
    if record.not_before is not None:
        lines.append(f"not before  {when(record.not_before)}")
    return lines


def _run_lines(record: Record) -> list[str]:
    lines = []
    if record.started_at is not None:
        lines.append(f"started     {when(record.started_at)}")
    if record.finished_at is not None:
        lines.append(f"finished    {when(record.finished_at)}")
    if record.duration_s is not None:
        lines.append(f"duration    {record.duration_s:.3f} s")
    if record.host is not None:
        # A running job's pid is its processor's: never to be taken for the job's own; an
        # ended one's is the process its tool ran in (a worker's): both were "pid" (h392).
        # One that never started (cancelled while pending, a drop quarantined) ran nowhere:
        # its pid wrote the record (`spoolq cancel`'s, statusd's, the processor's: h397).
        # One its processor died running was written by the recovery of another (a
        # processor started since, pid 1 again in a container): "ran in pid" named a
        # process that never ran it (h408).
        whose = "processor pid" if record.state is JobState.RUNNING \
            else "written by pid" if record.started_at is None or _abandoned(record) \
            else "ran in pid"
        pid = "" if record.pid is None else f" ({whose} {record.pid})"
        lines.append(f"host        {record.host}{pid}")
    progress = record.progress
    # One without a fraction or a message only says where the run is (host, above).
    if record.state is JobState.RUNNING and progress is not None and (
            progress.fraction is not None or progress.message):
        shown = "-" if progress.fraction is None else f"{progress.fraction:.0%}"
        lines.append(f"progress    {shown} {progress.message}".rstrip())
    return lines


def _abandoned(record: Record) -> bool:
    """An orphan's record, failed by recovery: its ``pid`` is the recovering process's."""
    return record.error is not None and record.error.type is ErrorType.ABANDONED


def _outcome_lines(record: Record, *, with_result: bool = True) -> list[str]:
    if record.unreadable is not None:
        return [f"unreadable  {record.unreadable}"]
    lines = []
    if record.source is not None:
        # Only a regular file's bytes are kept, so only it has a size: a symlink's said
        # "? bytes", as if its size were lost (QA).
        size = "" if record.source.size is None else f", {record.source.size} bytes"
        lines.append(f"source      {record.source.name} ({record.source.kind}{size})")
    error, earlier = record.error, record.earlier_errors or []
    last = _retried_failure(record)
    lines += _earlier_lines(record, earlier[:-1] if last is not None else earlier)
    if error is not None:
        if last is not None:
            lines.append(f"last error  {_failure(last, error.message)}")
        else:
            label = "error      " if record.state is JobState.FAILED else "last error "
            lines.append(f"{label} {error.type.value}: {error.message}")
        if error.retry_at is not None and record.state is not JobState.FAILED:
            # The retry's backoff, never the client's not_before.
            lines.append(f"backoff     until {when(error.retry_at)} (after the last error)")
        if error.traceback and record.state is JobState.FAILED:
            lines += ["traceback", *_indented(_text_lines(error.traceback.rstrip()))]
    if record.state is JobState.DONE and with_result:
        lines += ["result", *_indented(_result_text(record.result))]
    return lines


def _retried_failure(record: Record) -> EarlierError | None:
    """The last entry of a job's history when it is the job's error: a job waiting for its
    retry, whose error was shown twice (an "earlier" line, then "last error" with the same
    words), is shown it once, as its last error.  The history keeps a message's first
    characters only (EARLIER_MESSAGE_CHARS): a longer one is matched by them, and shown
    whole, as the error holds it."""
    from spool.models import cut_earlier_message  # noqa: PLC0415 - lazy, see spool.cli

    error, earlier = record.error, record.earlier_errors
    if error is None or not earlier or record.state is JobState.FAILED:
        return None
    last = earlier[-1]
    same = (last.type, last.message) == (error.type, cut_earlier_message(error.message))
    return last if same else None


def _earlier_lines(record: Record, earlier: list[EarlierError]) -> list[str]:
    """The failures of the job's earlier runs (``earlier``, of its history), oldest first,
    one line each."""
    lines = []
    if record.earlier_errors_dropped:
        dropped = record.earlier_errors_dropped
        lines.append(f"earlier     {dropped} older failure{'s' * (dropped > 1)} not kept")
    lines += [f"earlier     {_failure(entry, entry.message)}" for entry in earlier]
    return lines


def _failure(entry: EarlierError, message: str) -> str:
    return (f"attempt {entry.attempt} {entry.type.value} at {when(entry.finished_at)}: "
            f"{message}")


def _large_lines(record: Record, large: LargeRecord) -> list[str]:
    """The outcome of a record read from its head: no result, and where to get it."""
    from spool.large import HEAD_BYTES, read_result_head  # noqa: PLC0415 - lazy, see spool.cli

    lines = _outcome_lines(record, with_result=False)
    if not large.complete:
        lines.append(f"omitted     fields past the first {HEAD_BYTES // 1024 // 1024} MiB "
                     "of the record")
    whole = f"the record is {large.size} bytes (spoolq show {record.id} --json writes it " \
        "as stored)"
    # A backtest's summary comes before its curves: the quick start's own backtest (21 MB)
    # was shown "result not shown" alone (QA h410).
    first = read_result_head(large) if record.state is JobState.DONE else {}
    if first:
        lines += [f"result      its first fields; the rest not shown: {whole}",
                  *_indented(_result_text(first))]
    else:
        what = "result" if record.state is JobState.DONE else "record"
        lines.append(f"{what:<11} not shown: {whole}")
    return lines


def unreadable_note(record: Record) -> str:
    """The error line of a job whose record cannot be read (``show``, ``wait``)."""
    return (f"error: job {record.id} is {record.state.value} but its record cannot be read: "
            f"{record.unreadable}")


def _result_text(result: Any) -> list[str]:
    text = orjson.dumps(result, default=str, option=_JSON).decode().split("\n")
    if len(text) <= RESULT_LINES:
        return text
    return [*text[:RESULT_LINES], f"... {len(text) - RESULT_LINES} more lines "
            "(spoolq show ID --json for all of it)"]


def _text_lines(text: str) -> list[str]:
    """``text`` cut at its newlines (``\\r\\n`` too) alone: ``str.splitlines`` also cut at
    a NEL, U+2028 or a form feed, which printable() shows as escapes on the line they
    are part of (a result's string went out in two pieces, the character gone)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _indented(lines: list[str]) -> list[str]:
    return [f"  {line}" for line in lines]
