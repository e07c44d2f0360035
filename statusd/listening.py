"""statusd's "listening on" line, written and read in one place.

Once its socket is bound, statusd says each address it listens on
(:mod:`statusd.__main__`): with ``STATUSD_PORT=0`` the port is the kernel's choice, and
this line is how a program that started it learns where it is (``spoolq demo``, the
benchmarks, the tests); a port picked free beforehand and let go could be taken before
statusd bound it.  Its readers match it here, so none drifts from what is written.
Imports nothing but :mod:`re`: ``spoolq demo`` reads it without loading aiohttp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MESSAGE = "statusd listening on http://%s"
"""The log message, of ``host:port`` (an IPv6 host in brackets)."""

SAID = re.compile(r"statusd listening on (?P<url>http://(?P<host>\[[0-9A-Fa-f:.]+\]|"
                  r"[^\s/:\[\]]+):(?P<port>\d+))(?=\s)")
"""The message in a log's text, its line whole: a port followed by the line's end (a
line still being written could show a port cut short)."""


@dataclass(frozen=True, slots=True)
class Listening:
    """An address statusd said it listens on."""

    host: str  # as written: an IPv6 address in brackets
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def said(text: str, host: str | None = None) -> Listening | None:
    """The first address ``text`` (statusd's log, or part of it) says statusd listens on,
    of ``host`` only when given; None while it says none."""
    for found in SAID.finditer(text):
        if host is None or found["host"] == host:
            return Listening(found["host"], int(found["port"]))
    return None
