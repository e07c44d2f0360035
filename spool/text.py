"""Text that UTF-8 (and so JSON) can hold, whatever a tool or a file name gave.

``os.listdir`` and ``surrogateescape`` hand over bytes that are not UTF-8 as lone
surrogates (U+DC80 to U+DCFF), which ``orjson`` refuses: the processor's log lines and
records and the CLI's JSON output write them as escapes instead.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(value: str) -> str:
    """``value`` as text UTF-8 can hold: lone surrogates become escapes, ``\\xff`` for
    a byte that was not UTF-8 (``os.listdir`` and ``surrogateescape`` give those as
    U+DC80 to U+DCFF), ``\\ud800`` for any other."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape, value)
    return value


_QUOTED_BYTE = re.compile(r"(?<!\\)\\udc([89a-f][0-9a-f])")


def bytes_quoted(message: str) -> str:
    """``message`` with each byte that was not UTF-8 as ``\\xff``: raw (a surrogate from
    ``surrogateescape``) or as ``repr`` quoted it (``\\udcff``).  Under a plain POSIX
    locale (``LC_ALL=C PYTHONUTF8=0``) every byte past ASCII of an argument is such a
    surrogate: an error quoting ``'café'`` said ``'caf\\udcc3\\udca9'`` (h401).

    Control characters are escaped too (``\\x1b``): argparse quotes a bad choice with
    ``repr``, but names unrecognized arguments and an ambiguous ``--s=VALUE`` as they
    were typed, and an escape in them reached the terminal (h411)."""
    return _QUOTED_BYTE.sub(r"\\x\1", one_line(message))


def comma_list(value: str) -> list[str]:
    """The items of a comma-separated setting (``SPOOL_TOOLS``' modules), stripped, the
    empty ones dropped: read so by the settings and by a forkserver that reads the
    environment itself (:mod:`processor.forkserver_tools`)."""
    return [item.strip() for item in value.split(",") if item.strip()]


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` as one line of plain text: control characters (a newline, a carriage
    return) as escapes (``\\r``), and lone surrogates as :func:`valid_text` writes them.
    A daemon's one error line naming a ``SPOOL_DIR`` that ended in ``\\r`` (a variable
    read from a file with CRLF line ends) was cut in two, or overwritten on a terminal,
    and journalctl shows a message with a control character as ``[blob data]``."""
    return valid_text(_CONTROL.sub(lambda m: ascii(m.group())[1:-1], text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def valid_strings(value: Any) -> Any:
    """``value`` with every string in it (keys too, lists, sets) through :func:`valid_text`."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_text(str(k)): valid_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [valid_strings(v) for v in value]
    return value


def seconds_text(seconds: float) -> str:
    """A duration for a message: ``600 s``, ``1.235 s``, ``300 ms``, ``25 µs``, ``1 ns``
    (``:g`` wrote a tiny timeout as ``1.00408e-09 s``), ``under 1 ns`` (``1e-291 ns``:
    QA h388)."""
    if seconds >= 1 or seconds <= 0:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"
    if seconds < 1e-9:
        return "under 1 ns"
    scale, unit = next(((scale, unit) for scale, unit in ((1e3, "ms"), (1e6, "µs"))
                        if seconds * scale >= 1), (1e9, "ns"))
    return f"{seconds * scale:.3g}".replace("e+03", "000") + f" {unit}"  # 999.6 -> 1000


MAX_MESSAGE_CHARS = 4_000
"""The longest error message a run's record (and a retry's job file) holds."""
MAX_TRACEBACK_CHARS = 16_000
"""The longest traceback a run's record (and a retry's job file) holds."""


def cut_text(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: its middle cut, with a note of the cut
    (the head says where, the tail what)."""
    if len(text) <= limit:
        return text
    keep = limit - 64  # room for the note
    head = keep // 2
    return (text[:head] + f"\n... {len(text) - keep:,} characters cut ...\n"
            + text[len(text) - (keep - head):])


UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(data: bytes) -> bytes:
    """A job file's bytes without the UTF-8 byte order mark some tools write first
    (PowerShell 5's ``Out-File -Encoding utf8``, Notepad): intake runs such a drop, so
    every reader of a job file in ``pending/`` or ``running/`` reads it the same way."""
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
