"""``spoolq`` as ops people script it and read it: what a fresh audit of the CLI found.

Each test runs the real CLI (``python -m spool.cli.main``) as a subprocess on a
real spool, on a pseudo-terminal where a person would be watching, and checks
what they would: exit codes, the one error line, that a hint printed for the
next command works when run as printed, and what reaches the terminal.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
from spoolkit import CLI

Proc = subprocess.CompletedProcess[bytes]


def spoolq(env: dict[str, str], *args: str, cwd: Path | None = None) -> Proc:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd or Path(env["SPOOL_DIR"]).parent,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)


# -- what reaches the terminal --------------------------------------------------------------


INVISIBLE = {"\u200b": "zero-width space", "\u202e": "right-to-left override",
             "\u2066": "left-to-right isolate", "\ufeff": "zero-width no-break space",
             "\u061c": "Arabic letter mark"}


def test_invisible_and_bidi_characters_reach_the_terminal_as_escapes(
        root: Path, env: dict[str, str]) -> None:
    """Whoever can write to pending/ chose these strings.  'run_backtest' with a
    zero-width space looked like the real tool in ``ls`` (and ``ls --tool run_backtest``
    then said no jobs); U+202E made an error read backwards.  The dashboard shows them
    as escapes 'as the CLI does': the CLI did not."""
    (root / "pending" / "spoof.json").write_bytes(orjson.dumps({
        "tool": "run_backtest\u200b",
        "params": {"message": "evil \u202edlrow \u2066x\u2069 \ufeff \u061c"}}))
    listed, shown = spoolq(env, "ls"), spoolq(env, "show", "spoof")
    for proc in (listed, shown):
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout.decode()
        for char, name in INVISIBLE.items():
            assert char not in text, (name, text)
    assert "run_backtest\\u200b" in listed.stdout.decode().splitlines()[1]
    assert "tool        run_backtest\\u200b" in shown.stdout.decode()
    assert "evil \\u202edlrow \\u2066x\\u2069 \\ufeff \\u061c" in shown.stdout.decode()
    record = orjson.loads(spoolq(env, "show", "spoof", "--json").stdout)
    assert record["tool"] == "run_backtest\u200b"  # --json keeps the data as it is
