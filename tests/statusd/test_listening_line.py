"""statusd's "listening on" line: what statusd writes is what its readers find (the demo,
the benchmarks, the tests), and a line still being written is not read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from statusd.__main__ import _shown
from statusd.listening import MESSAGE, Listening, said


@pytest.mark.parametrize(("address", "found"), [
    (("127.0.0.1", 8080), Listening("127.0.0.1", 8080)),
    (("::1", 41000, 0, 0), Listening("[::1]", 41000)),
    (("0.0.0.0", 1), Listening("0.0.0.0", 1)),
])
def test_what_statusd_writes_is_what_is_read(address: tuple[object, ...],
                                             found: Listening) -> None:
    line = f"2026-12-06T13:33:56.957Z INFO spoolq.statusd: {MESSAGE % _shown(address)}\n"
    assert said(line) == found
    assert said(line, found.host) == found
    assert found.url == f"http://{_shown(address)}"


def test_the_first_address_of_the_host_asked_for() -> None:
    text = "".join(f"x: {MESSAGE % a}\n" for a in ("[::1]:5000", "127.0.0.1:5001",
                                                   "127.0.0.1:5002"))
    assert said(text) == Listening("[::1]", 5000)
    assert said(text, "127.0.0.1") == Listening("127.0.0.1", 5001)
    assert said(text, "10.0.0.1") is None


def test_a_line_still_being_written_is_not_read() -> None:
    """A port cut short by a read that came mid-write (":80" of ":8080") is no port."""
    assert said(MESSAGE % "127.0.0.1:80") is None
    assert said(MESSAGE % "127.0.0.1:8080" + "\n") == Listening("127.0.0.1", 8080)
    assert said("statusd listening on http://127.0.0.1:\n") is None


def test_reading_it_loads_no_aiohttp() -> None:
    """``spoolq demo`` reads it: the CLI does not load the server's libraries."""
    code = "import sys, statusd.listening; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
