"""``spoolq show`` and ``wait`` on a record too large to read whole (a backtest's
equity curves can make one of a GiB).

They read and parsed the whole file: a 200 MB record cost the CLI process over
600 MB of memory to print.  Now a record over ``spool.large.PARSE_MAX_BYTES`` is
read from its head: the text shows its leading fields and its size in place of
the result, and ``--json`` writes the file to stdout as stored, a chunk at a
time.  Each command runs as a real process; its peak memory is the kernel's
count (``VmHWM``, read by the process as it exits).
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from spoolkit import CLI, spoolq

from spool.large import PARSE_MAX_BYTES
from spool.layout import Layout
from spool.states import JobState

MiB = 1024 * 1024
RESULT_BYTES = 200 * MiB
PEAK_MAX_BYTES = 120 * MiB
"""Well over what the CLI takes to show a small record, well under the record."""
LEADING = {"id": "big", "tool": "run_backtest", "state": "done", "params": {"symbols": ["AAA"]},
           "priority": 0, "attempts": 1, "meta": {"requested_by": "ops"},
           "submitted_at": "2026-11-29T10:00:00Z", "started_at": "2026-11-29T10:00:01Z",
           "finished_at": "2026-11-29T10:05:01Z", "duration_s": 300.0, "host": "h", "pid": 7}


def _write_large(path: Path, size: int, *, end: bytes = b'"}}') -> str:
    """A done record of about ``size`` bytes as the spool writes it (result last), in
    chunks; its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        def put(data: bytes) -> None:
            fh.write(data)
            digest.update(data)
        put(orjson.dumps(LEADING)[:-1] + b',"result":{"curve":"')
        chunk = b"x" * MiB
        for _ in range(size // MiB):
            put(chunk)
        put(end)
    return digest.hexdigest()


PEAK_PROBE = """
import atexit, os, runpy, sys

def peak():
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["SPOOLQ_TEST_PEAK"], "w") as out:
        out.write(str(kib * 1024))

atexit.register(peak)
runpy.run_module("spool.cli.main", run_name="__main__", alter_sys=True)
"""
"""Runs the CLI and writes its peak RSS at exit.  ``VmHWM`` counts this program's
memory only: ``wait4``'s ``ru_maxrss`` starts from the forking parent's, which
in a full test run is pytest at several hundred MiB."""


def _run(env: dict[str, str], out: Path, *args: str) -> tuple[int, str, int]:
    """``spoolq ARGS`` with stdout to ``out``: exit status, stderr, peak RSS in bytes."""
    peak = out.with_name(out.name + ".peak")
    with open(out, "wb") as stdout:
        proc = subprocess.run([sys.executable, "-c", PEAK_PROBE, *args],
                              env={**env, "SPOOLQ_TEST_PEAK": str(peak)}, stdout=stdout,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120,
                              check=False)
    return proc.returncode, proc.stderr.decode(), int(peak.read_text())


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The 200 MiB record, written (and hashed) once for the module: each of six tests
    took a second or two to write its own.  Only ever read; :func:`big` links it."""
    path = tmp_path_factory.mktemp("large") / "big.json"
    return path, _write_large(path, RESULT_BYTES)


@pytest.fixture
def big(root: Path, big_file: tuple[Path, str]) -> tuple[Path, str]:
    """``done/big.json`` in this test's spool: a hard link to :func:`big_file`, so a
    command that moved or replaced it (a rename, as every spool move is) leaves the
    other tests' copy as it was."""
    path = Layout(root).job(JobState.DONE, "big")
    os.link(big_file[0], path)
    return path, big_file[1]


def test_show_prints_the_leading_fields_and_the_size_in_bounded_memory(
        env: dict[str, str], big: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = big
    code, err, peak = _run(env, tmp_path / "out", "show", "big")
    text = (tmp_path / "out").read_text()
    assert (code, err) == (0, ""), err
    assert peak < PEAK_MAX_BYTES, f"peak RSS {peak / MiB:.0f} MiB"
    lines = text.splitlines()
    assert lines[:3] == ["id          big", "state       done", "tool        run_backtest"]
    assert 'meta        {"requested_by":"ops"}' in lines
    assert lines[-1] == (f"result      not shown: the record is {path.stat().st_size} bytes "
                         "(spoolq show big --json writes it as stored)")


def test_show_prints_a_large_results_first_fields_a_backtests_summary(
        env: dict[str, str], root: Path, tmp_path: Path) -> None:
    """The quick start's backtest (200 symbols, a 21 MB record) was shown "result not
    shown" alone (QA h410): the fields of the result its head holds whole are shown, a
    backtest's summary among them (run_backtest writes it before the symbols' curves),
    and what is cut is not."""
    path = Layout(root).job(JobState.DONE, "big")
    summary = {"symbols": 1, "mean_sharpe": 0.4, "best_symbol": "AAA"}
    with open(path, "wb") as fh:
        fh.write(orjson.dumps(LEADING)[:-1] + b',"result":' + orjson.dumps(
            {"strategy": "ma_crossover", "params": {"fast": 10}, "summary": summary}
        )[:-1] + b',"symbols":{"AAA":{"equity_curve":[')
        fh.write(b"[1,100000.0]," * (10 * MiB // 13) + b"[2,1.0]]}}}}")
    code, err, peak = _run(env, tmp_path / "out", "show", "big")
    lines = (tmp_path / "out").read_text().splitlines()
    assert (code, err) == (0, ""), err
    assert peak < PEAK_MAX_BYTES, f"peak RSS {peak / MiB:.0f} MiB"
    at = lines.index(f"result      its first fields; the rest not shown: the record is "
                     f"{path.stat().st_size} bytes (spoolq show big --json writes it as "
                     "stored)")
    shown = orjson.loads("\n".join(lines[at + 1:]))
    assert shown == {"strategy": "ma_crossover", "params": {"fast": 10}, "summary": summary}


@pytest.mark.parametrize("command", ["show", "wait"])
def test_json_writes_the_record_as_stored_in_bounded_memory(
        env: dict[str, str], big: tuple[Path, str], tmp_path: Path, command: str) -> None:
    _, digest = big
    out = tmp_path / "out"
    code, err, peak = _run(env, out, command, "big", "--json")
    assert code == 0, err
    assert peak < PEAK_MAX_BYTES, f"peak RSS {peak / MiB:.0f} MiB"
    left = out.stat().st_size - 1
    written = hashlib.sha256()
    with open(out, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(MiB, left))
            written.update(chunk)
            left -= len(chunk)
        assert fh.read() == b"\n"
    assert written.hexdigest() == digest, "the file's bytes, then a newline"


@pytest.mark.parametrize("command", ["cancel", "retry"])
def test_cancel_and_retry_of_a_large_done_record_refuse_in_bounded_memory(
        env: dict[str, str], big: tuple[Path, str], tmp_path: Path, command: str) -> None:
    """Both read the record only for its state, but read it whole: a 600 MiB one took
    spoolq to 1.9 GB, and statusd's POST .../cancel from 1.1 to 2.9 GB."""
    code, err, peak = _run(env, tmp_path / "out", command, "big")
    assert code == 1 and "done" in err, err
    assert peak < PEAK_MAX_BYTES, f"peak RSS {peak / MiB:.0f} MiB"
    assert big[0].stat().st_size > RESULT_BYTES


def test_a_large_record_cut_short_is_unreadable(env: dict[str, str], root: Path) -> None:
    path = Layout(root).job(JobState.DONE, "big")
    _write_large(path, PARSE_MAX_BYTES + MiB, end=b"")  # a disk full mid-write
    for args in (["show", "big"], ["show", "big", "--json"], ["wait", "big"]):
        proc = spoolq(env, *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "is cut short" in proc.stderr, proc.stderr
        assert "xxxx" not in proc.stdout


@pytest.mark.parametrize("depth", [500, 100_000])
def test_a_large_record_nested_too_deep_before_result_is_unreadable(
        env: dict[str, str], root: Path, depth: int) -> None:
    """Leading fields are parsed by the json module, which recursed out of the stack on
    a params field 100,000 levels deep, and at 500 gave fields orjson cannot write: ls,
    show and wait were "a bug in spoolq"."""
    path = Layout(root).job(JobState.DONE, "deep")
    path.write_bytes(b'{"id": "deep", "state": "done", "submitted_at": "2026-01-01T00:00:00Z", '
                     b'"params": {"x": ' + b"[" * depth + b"]" * depth +
                     b'}, "result": "' + b"x" * (PARSE_MAX_BYTES + MiB) + b'"}')
    for args in (["show", "deep"], ["show", "deep", "--json"], ["wait", "deep"]):
        proc = spoolq(env, *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "done/deep.json is not JSON" in proc.stderr, proc.stderr
        assert "a bug in spoolq" not in proc.stderr
    listed = spoolq(env, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "is not JSON" in orjson.loads(listed.stdout)["tasks"][0]["unreadable"]


def test_a_small_record_is_shown_as_before(env: dict[str, str], root: Path) -> None:
    record = {**LEADING, "result": {"curve": "x" * 100}}
    Layout(root).job(JobState.DONE, "big").write_bytes(orjson.dumps(record))
    shown = spoolq(env, "show", "big")
    assert shown.returncode == 0 and "not shown" not in shown.stdout
    assert shown.stdout.splitlines()[-4:] == ["result", "  {", f'    "curve": "{"x" * 100}"',
                                              "  }"], shown.stdout
    assert orjson.loads(spoolq(env, "show", "big", "--json").stdout) == record


def test_ls_lists_a_large_record_from_its_head_in_bounded_memory(
        env: dict[str, str], root: Path, big: tuple[Path, str], tmp_path: Path) -> None:
    """``ls`` read and parsed every record whole, even one its ``--tool`` filter left out:
    with this 200 MB record beside a small one it took over 1 GiB, and ``ls --json``
    put the whole result in the list.  It lists such a record as statusd's list does:
    without ``result``, with ``"result_omitted": true``."""
    small = {**LEADING, "id": "small", "tool": "echo", "submitted_at": "2026-11-29T11:00:00Z",
             "result": {"message": "hi"}}
    Layout(root).job(JobState.DONE, "small").write_bytes(orjson.dumps(small))
    for args in (["ls"], ["ls", "--tool", "echo"], ["ls", "--json"]):
        out = tmp_path / "out"
        code, err, peak = _run(env, out, *args)
        assert (code, err) == (0, ""), (args, err)
        assert peak < PEAK_MAX_BYTES, f"{args}: peak RSS {peak / MiB:.0f} MiB"
    assert out.stat().st_size < MiB
    listed = {t["id"]: t for t in orjson.loads(out.read_bytes())["tasks"]}
    assert listed["small"]["result"] == {"message": "hi"} and "result_omitted" not in \
        listed["small"]
    assert "result" not in listed["big"] and listed["big"]["result_omitted"] is True
    assert listed["big"]["meta"] == {"requested_by": "ops"}
    assert listed["big"]["duration_s"] == 300.0 and listed["big"]["state"] == "done"
    text = spoolq(env, "ls").stdout.splitlines()
    assert [row.split()[:3] for row in text[1:]] == [["small", "done", "echo"],
                                                     ["big", "done", "run_backtest"]]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_json_of_a_large_record_is_escaped_where_stdout_is_not_utf8(
        env: dict[str, str], root: Path, encoding: str) -> None:
    """Where stdout is not UTF-8 a small record's JSON carries "é" as ``\\u00e9``
    (render.json_text); a large one was written as stored, UTF-8 bytes, which a reader in
    that encoding took for other characters ('Ã©') or refused.  Characters cut by the
    copy's chunks are escaped whole."""
    path = Layout(root).job(JobState.DONE, "big")
    head = orjson.dumps(LEADING)[:-1] + b',"result":{"curve":"'
    words = "h\u00e9llo \u2192 \u2713 \U0001f600".encode()
    pad = b"x" * (MiB - len(head) - 2)  # the copy's first chunk ends inside "é"
    body = head + pad + words * (PARSE_MAX_BYTES // len(words) + 1) + b'"}}'
    path.write_bytes(body)
    proc = spoolq({**env, "PYTHONIOENCODING": encoding}, "show", "big", "--json")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    proc.stdout.encode("ascii")  # escapes only
    assert orjson.loads(proc.stdout) == orjson.loads(body)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_write_error_of_a_large_records_copy_names_standard_output(
        env: dict[str, str], root: Path, tmp_path: Path, unbuffered: bool) -> None:
    """``show --json > file`` under a file-size limit (``ulimit -f``, or a disk filling
    up): the large record's copy said "spoolq: error: File too large", naming nothing,
    where a small record's output says "cannot write to standard output"."""
    _write_large(Layout(root).job(JobState.DONE, "big"), PARSE_MAX_BYTES + MiB)
    run_env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        run_env["PYTHONUNBUFFERED"] = "1"
    with (tmp_path / "shown.json").open("wb") as out:
        proc = subprocess.run(
            [*CLI, "show", "big", "--json"], env=run_env, cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, timeout=60,
            check=False, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                               (MiB, MiB)))
    lines = proc.stderr.decode().splitlines()
    assert (proc.returncode, lines) == (
        1, ["spoolq: error: cannot write to standard output: File too large"])


def test_wait_for_several_marks_a_large_result_left_out(
        env: dict[str, str], big: tuple[Path, str], tmp_path: Path) -> None:
    """``wait A B --json`` wrote a record over 8 MiB, read from its head, with "result":
    null, as a tool's null result reads (QA): its result is left out and marked so, as
    ``ls --json`` marks it, in bounded memory."""
    out = tmp_path / "out"
    code, err, peak = _run(env, out, "wait", "big", "big", "--json")
    assert code == 0, err
    assert peak < PEAK_MAX_BYTES, f"peak RSS {peak / MiB:.0f} MiB"
    for line in out.read_text().splitlines():
        record = orjson.loads(line)
        assert record["id"] == "big" and record["result_omitted"] is True
        assert "result" not in record


def test_ls_reads_records_of_a_few_mib_from_their_heads(
        env: dict[str, str], root: Path, tmp_path: Path) -> None:
    """Records of 1 to 8 MiB (a backtest's curves) were read and parsed whole by every
    page, whatever it showed: each one's sort key was "unknown" past 1 MiB, and each row
    kept its result though the table shows none (QA: 2.9 s and 786 MB a page; 51 rows
    of 3 MB, 877 MB).  Their keys come from their heads now, and the table's rows too."""
    curve = orjson.dumps([round(i * 0.001, 3) for i in range(400_000)])  # about 3 MiB
    layout = Layout(root)
    for n in range(24):
        leading = {**LEADING, "id": f"bt-{n:02d}", "submitted_at": f"2026-11-29T10:{n:02d}:00Z"}
        layout.job(JobState.DONE, f"bt-{n:02d}").write_bytes(
            orjson.dumps(leading)[:-1] + b',"result":{"curve":' + curve + b"}}")
    out = tmp_path / "out"
    code, err, peak = _run(env, out, "ls", "--limit", "20")
    assert code == 0 and "more: spoolq ls --limit 20 --cursor " in err, err
    rows = out.read_text().splitlines()[1:]
    assert [row.split()[:3] for row in rows] == [
        [f"bt-{n:02d}", "done", "run_backtest"] for n in range(23, 3, -1)]
    assert peak < 100 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


def test_ls_lists_a_record_rewritten_with_sorted_keys_in_its_place(
        env: dict[str, str], root: Path) -> None:
    """A record of 100 KiB rewritten by another program with its keys sorted (``jq -S``:
    ``result`` before ``state``, ``submitted_at`` and ``tool``) was shown from its head
    without its tool and time, left out by ``--tool``, and skipped by a walk of small
    pages (the review).  It is read whole, as any reader reads it; a record of 40 KiB is
    listed without its result, as statusd's list lists it."""
    layout = Layout(root)
    for n in range(4):
        small = {**LEADING, "id": f"s{n}", "tool": "echo", "result": {"message": n},
                 "submitted_at": f"2026-11-29T10:0{n * 2}:00Z"}
        layout.job(JobState.DONE, f"s{n}").write_bytes(orjson.dumps(small))
    sorted_keys = {**LEADING, "id": "sorted", "tool": "backtest",
                   "submitted_at": "2026-11-29T10:03:00Z", "result": {"curve": "x" * 100_000}}
    layout.job(JobState.DONE, "sorted").write_bytes(
        orjson.dumps(sorted_keys, option=orjson.OPT_SORT_KEYS))
    middle = {**LEADING, "id": "middle", "tool": "echo", "submitted_at": "2026-11-29T10:05:00Z",
              "result": {"curve": "y" * 40_000}}
    layout.job(JobState.DONE, "middle").write_bytes(orjson.dumps(middle))

    rows = spoolq(env, "ls").stdout.splitlines()[1:]
    assert [row.split()[:5] for row in rows] == [
        ["s3", "done", "echo", "2026-11-29", "10:06:00Z"],
        ["middle", "done", "echo", "2026-11-29", "10:05:00Z"],
        ["s2", "done", "echo", "2026-11-29", "10:04:00Z"],
        ["sorted", "done", "backtest", "2026-11-29", "10:03:00Z"],
        ["s1", "done", "echo", "2026-11-29", "10:02:00Z"],
        ["s0", "done", "echo", "2026-11-29", "10:00:00Z"]]
    assert spoolq(env, "ls", "--tool", "backtest").stdout.splitlines()[1].startswith("sorted ")
    walked, cursor = [], None
    while True:
        proc = spoolq(env, "ls", "--json", "--limit", "1", *(["--cursor", cursor] if cursor
                                                             else []))
        page = orjson.loads(proc.stdout)
        walked += [task["id"] for task in page["tasks"]]
        if not (cursor := page["next_cursor"]):
            break
        if page["tasks"][0]["id"] == "middle":
            assert "result" not in page["tasks"][0] and page["tasks"][0]["result_omitted"]
    assert walked == ["s3", "middle", "s2", "sorted", "s1", "s0"]
