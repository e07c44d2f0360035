"""``spoolq`` in the locales ops scripts and units give it: stdout and argv not UTF-8.

``LC_ALL=C`` alone leaves Python in UTF-8 mode (PEP 540); with ``PYTHONUTF8=0`` too,
or ``PYTHONIOENCODING=ascii`` / ``latin-1``, stdout is not UTF-8, and with
``PYTHONUTF8=0`` the arguments are decoded as ASCII (their other bytes as lone
surrogates).  Each test runs the real CLI as a subprocess on a real spool.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from spoolkit import BytesProc as Proc
from spoolkit import spoolq_bytes as spoolq

from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from spool.transitions import Spool

WORDS = "h\u00e9llo \u2192 \u2713 \U0001f600"  # Latin-1, BMP and past U+FFFF
NOT_UTF8_OUT = {"ascii": {"PYTHONIOENCODING": "ascii"},
                "latin-1": {"PYTHONIOENCODING": "latin-1"},
                "C, PYTHONUTF8=0": {"LC_ALL": "C", "PYTHONUTF8": "0"}}


def spool_of(root: Path) -> Spool:
    layout = Layout(root)
    return Spool(layout, Mover(layout, FsyncMode.NEVER))


def ok(proc: Proc, code: int = 0) -> str:
    """Exit ``code`` with no bug line; stdout as ASCII-safe text."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.args, proc.returncode, err)
    assert "Traceback" not in err and "a bug in spoolq" not in err, err
    return proc.stdout.decode("latin-1")


@pytest.mark.parametrize("how", list(NOT_UTF8_OUT))
def test_records_past_ascii_reach_a_stdout_that_is_not_utf8(root: Path, env: dict[str, str],
                                                            how: str) -> None:
    """A record holding "é" or "✓" stopped ``show``, ``show --json``, ``ls --json`` and
    ``wait`` with "unexpected UnicodeEncodeError ... (a bug in spoolq)" and exit 1, its
    output cut short: to a script, ``wait``'s 1 says the job failed, while it was pending.
    JSON now carries such characters as JSON escapes, text as Python escapes."""
    spool_of(root).submit(Job(tool="echo", params={"message": WORDS}), "words")
    run_env = {**env, **NOT_UTF8_OUT[how]}
    shown = ok(spoolq(run_env, "show", "words"))
    assert "\\u2713" in shown and "\\U0001f600" in shown, shown  # latin-1 has the é
    as_json = ok(spoolq(run_env, "show", "words", "--json"))
    assert orjson.loads(as_json)["params"] == {"message": WORDS}
    listed = ok(spoolq(run_env, "ls", "--json"))
    assert orjson.loads(listed)["tasks"][0]["params"] == {"message": WORDS}
    waited = ok(spoolq(run_env, "wait", "words", "--timeout", "0.1", "--json"), 3)
    assert orjson.loads(waited)["params"] == {"message": WORDS}
    both = ok(spoolq(run_env, "wait", "words", "words2", "--timeout", "0.1", "--json"), 1)
    assert orjson.loads(both.splitlines()[0])["params"] == {"message": WORDS}


ASCII_ARGV = {"LC_ALL": "C", "PYTHONUTF8": "0"}
"""Python decodes the arguments as ASCII, the other bytes as lone surrogates."""


def test_utf8_arguments_are_taken_where_the_locale_is_ascii(root: Path,
                                                            env: dict[str, str]) -> None:
    """``-p message=é`` was refused as "not valid UTF-8: b'message=h\\xc3\\xa9llo'" (bytes
    that are UTF-8), ``--params`` and ``--meta`` as "not JSON: str is not valid UTF-8",
    and ``ls --tool`` of a tool named past ASCII listed nothing.  Bytes that are not
    UTF-8 are still refused."""
    run_env = {**env, **ASCII_ARGV}
    word = WORDS.encode()
    ok(spoolq(run_env, "submit", "echo", "-p", b"message=" + word, "--id", "by-p"))
    ok(spoolq(run_env, "submit", "echo", "--params", b'{"message": "' + word + b'"}',
              "--meta", b'{"who": "' + word + b'"}', "--id", "by-params"))
    for job_id in ("by-p", "by-params"):
        job = orjson.loads((root / "pending" / f"{job_id}.json").read_bytes())
        assert job["params"] == {"message": WORDS}, job
    assert orjson.loads((root / "pending" / "by-params.json").read_bytes())["meta"] == {
        "who": WORDS}
    spool_of(root).submit(Job(tool="t\u00f6\u00f6l"), "named")
    listed = ok(spoolq(run_env, "ls", "--tool", "t\u00f6\u00f6l".encode(), "--json"))
    assert [t["id"] for t in orjson.loads(listed)["tasks"]] == ["named"]
    bad = spoolq(run_env, "submit", "echo", "-p", b"message=\xff", "--id", "bad")
    assert bad.returncode == 2 and b"not valid UTF-8: b'message=\\xff'" in bad.stderr, bad
    assert not (root / "pending" / "bad.json").exists()


@pytest.mark.parametrize("how", ["UTF-8", *NOT_UTF8_OUT])
def test_a_path_that_is_not_utf8_is_printed_as_its_bytes(tmp_path: Path, env: dict[str, str],
                                                         how: str) -> None:
    """``spoolq init`` names the spool it made: a folder named with a byte that is not
    UTF-8 was printed as '\\udcff' (with stdout's errors set to backslashreplace), a name
    no folder has; under PYTHONIOENCODING=ascii it was an "unexpected UnicodeEncodeError"."""
    root = os.fsencode(tmp_path) + b"/sp\xffool"
    proc = spoolq({**env, **NOT_UTF8_OUT.get(how, {})}, "--spool-dir", root, "init")
    assert ok(proc).encode("latin-1") == b"spool ready at " + root + b"\n"


def test_an_error_line_names_a_byte_that_is_not_utf8_as_that_byte(tmp_path: Path,
                                                                  env: dict[str, str]) -> None:
    """The error line of ``spoolq --spool-dir $'/x/sp\\xffool' ls`` said 'sp\\udcffool':
    pasted into ``$'...'`` that names another folder, and spool-processor's own line
    says 'sp\\xffool' for the same spool (spool.text.one_line)."""
    root = os.fsencode(tmp_path) + b"/sp\xffool"
    proc = spoolq(env, "--spool-dir", root, "ls")
    err = proc.stderr.decode("ascii")
    assert proc.returncode == 1, err
    assert os.fsdecode(tmp_path) + "/sp\\xffool is not an initialised spool" in err, err


@pytest.mark.parametrize("how", list(NOT_UTF8_OUT))
def test_ls_columns_line_up_where_stdout_escapes(root: Path, env: dict[str, str],
                                                 how: str) -> None:
    """``ls`` padded a tool named "\u2713t\u00e9st" as 5 columns, and stdout wrote it as
    '\\u2713t\\xe9st' (or '\\u2713t\u00e9st' in latin-1): every column after it
    stood off from the header's."""
    spool_of(root).submit(Job(tool="\u2713t\u00e9st", params={}), "a")
    spool_of(root).submit(Job(tool="echo", params={}), "b")
    lines = ok(spoolq({**env, **NOT_UTF8_OUT[how]}, "ls")).splitlines()
    starts = {line.index("pending" if line != lines[0] else "STATE") for line in lines}
    assert len(starts) == 1, lines
    starts = {line.index("20" if line != lines[0] else "SUBMITTED", 10) for line in lines}
    assert len(starts) == 1, lines


def test_a_usage_error_quotes_bytes_past_ascii_as_bytes_under_a_plain_posix_locale(
        root: Path, env: dict[str, str]) -> None:
    """Under ``LC_ALL=C PYTHONUTF8=0`` each byte past ASCII of an argument is a
    surrogate: the error said ``invalid id 'caf\\udcc3\\udca9'``, which names no bytes a
    user typed (h401).  A backslash the user typed stays one."""
    posix = {**env, "LC_ALL": "C", "PYTHONUTF8": "0"}
    typed = spoolq(posix, "submit", "echo", "--id", "café".encode())
    assert typed.returncode == 2, typed
    assert b"invalid id 'caf\\xc3\\xa9': " in typed.stderr, typed.stderr
    literal = spoolq(posix, "submit", "echo", "--id", "a\\udcff")
    assert literal.returncode == 2 and b"invalid id 'a\\\\udcff': " in literal.stderr, literal
    assert list((root / "pending").iterdir()) == []


def test_arguments_a_usage_error_names_as_typed_are_escaped(
        root: Path, env: dict[str, str]) -> None:
    """argparse names unrecognized arguments and an ambiguous ``--s=VALUE`` as typed, not
    with ``repr``: an escape in them recoloured the terminal, and under ``LC_ALL=C
    PYTHONUTF8=0`` 'café' read ``caf\\udcc3\\udca9`` there (h411)."""
    posix = {**env, "LC_ALL": "C", "PYTHONUTF8": "0"}
    for run_env, args, says in (
            (env, ["stats", "\x1b[31mX"], b"unrecognized arguments: \\x1b[31mX (see "),
            (env, ["ls", "--s=\x1b]0;t\x07"], b"ambiguous option: --s=\\x1b]0;t\\x07 could"),
            (posix, ["stats", "caf\u00e9".encode()], b"unrecognized arguments: caf\\xc3\\xa9")):
        proc = spoolq(run_env, *args)
        assert proc.returncode == 2, proc
        assert b"\x1b" not in proc.stderr and b"\x07" not in proc.stderr, proc.stderr
        assert says in proc.stderr and proc.stderr.count(b"\n") == 1, proc.stderr
