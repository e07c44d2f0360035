"""Text output for people: tables, a record's summary, a progress bar."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from spool.models import Record

BAR_WIDTH = 30
REDRAW_S = 0.1


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def _when(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def record_row(record: Record) -> list[str]:
    if record.state.value == "running" and record.progress and record.progress.fraction:
        detail = f"{record.progress.fraction:.0%} {record.progress.message}"
    elif record.error is not None:
        detail = f"{record.error.type}: {record.error.message}"
    else:
        detail = ""
    took = f"{record.duration_s:.2f}s" if record.duration_s is not None else "-"
    return [record.id, record.state.value, record.tool or "-", _when(record.submitted_at),
            took, detail[:60]]


def record_lines(record: Record) -> list[str]:
    lines = [f"id          {record.id}", f"state       {record.state}",
             f"tool        {record.tool or '-'}",
             f"attempts    {record.attempts}" + (f" of {record.max_attempts}"
                                                 if record.max_attempts else ""),
             f"submitted   {_when(record.submitted_at)}",
             f"started     {_when(record.started_at)}",
             f"finished    {_when(record.finished_at)}"]
    if record.duration_s is not None:
        lines.append(f"duration    {record.duration_s:.3f} s")
    if record.params:
        lines.append(f"params      {_short(record.params)}")
    if record.progress is not None and record.state.value == "running":
        lines.append(f"progress    {record.progress.fraction or 0:.0%} {record.progress.message}")
    if record.error is not None:
        lines.append(f"error       {record.error.type}: {record.error.message}")
    if record.source is not None:
        lines.append(f"source      {record.source.name} ({record.source.kind}, "
                     f"{record.source.size} bytes)")
    if record.state.value == "done":
        lines.append(f"result      {_short(record.result)}")
    return lines


def _short(value: Any, limit: int = 200) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class ProgressBar:
    """One redrawn line on a terminal: state, fraction, message."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last = 0.0
        self._drawn = False

    def update(self, record: Record) -> None:
        now = time.monotonic()
        final = record.state.value in ("done", "failed")
        if not final and now - self._last < REDRAW_S:
            return
        self._last = now
        fraction = record.progress.fraction if record.progress and record.progress.fraction \
            else (1.0 if record.state.value == "done" else 0.0)
        message = record.progress.message if record.progress else ""
        filled = round(fraction * BAR_WIDTH)
        line = (f"{record.id[:28]:<28} {record.state.value:<8} "
                f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {message}")
        self.out.write("\r\x1b[2K" + line[:160])
        self.out.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.out.write("\r\x1b[2K")
            self.out.flush()
