"""Structured logs: one JSON object per line on stderr, one line per transition.

journald keeps stderr lines as they are, so ``journalctl -u spool-processor
-o cat | jq`` reads them directly.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

TRANSITIONS = logging.getLogger("spoolq.transitions")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def transition(event: str, **fields: Any) -> None:
    """Log one transition (``event`` is e.g. ``claimed``, ``done``, ``failed``)."""
    TRANSITIONS.info(event, extra={"fields": {"event": event, **fields}})
