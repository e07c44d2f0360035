"""DESIGN as an integrator meets it through ``spoolq`` beside a real ``spool-processor``.

A job file an integration writes is one job whichever way it enters the spool: the
processor's intake reads a UTF-8 file that starts with a byte order mark (what
Windows tools such as PowerShell 5's ``Out-File -Encoding utf8`` write) as the job
after it, so ``spoolq submit --file`` of the same file takes it too.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from spoolkit import spoolq, start_processor, stop_processor

from spool.intake import UTF16_HINT, malformed_reason

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def processor(root: Path, env: dict[str, str], tmp_path: Path
              ) -> Iterator[subprocess.Popen[bytes]]:
    """A real processor on ``root`` (its status file written), stopped by SIGTERM."""
    proc = start_processor(root, env, tmp_path / "processor.log", JOB_NUM="1",
                           SPOOL_SETTLE_S="0.5")
    try:
        yield proc
    finally:
        stop_processor(proc)


def _record(root: Path, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        for state in ("done", "failed"):
            path = root / state / f"{job_id}.json"
            if path.exists():
                record: dict[str, object] = orjson.loads(path.read_bytes())
                return record
        assert time.monotonic() < deadline, f"no record of {job_id} in 30 s"
        time.sleep(0.02)


def test_submit_file_takes_a_job_file_with_a_bom_as_the_processor_does(
        root: Path, env: dict[str, str], tmp_path: Path,
        processor: subprocess.Popen[bytes]) -> None:
    """``spoolq submit --file`` refused a job file that starts with a UTF-8 BOM ("not a
    valid job: Invalid JSON", exit 1), while the same bytes dropped into ``pending/``
    ran ``done``: the CLI's reading of a job file differed from the processor's."""
    data = BOM + b'{"tool": "echo", "params": {"message": "from windows"}}\r\n'
    (root / "tmp" / "dropped").write_bytes(data)
    os.rename(root / "tmp" / "dropped", root / "pending" / "dropped.json")
    dropped = _record(root, "dropped")
    assert dropped["state"] == "done", dropped
    assert dropped["result"] == {"message": "from windows"}

    job_file = tmp_path / "job.json"
    job_file.write_bytes(data)
    submitted = spoolq(env, "submit", "--file", str(job_file), "--id", "submitted", "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert orjson.loads(submitted.stdout) == {"id": "submitted"}
    record = _record(root, "submitted")
    assert record["state"] == "done", record
    assert record["result"] == {"message": "from windows"}

    piped = spoolq(env, "submit", "--file", "-", "--id", "piped",
                   stdin=data.decode("utf-8"))
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "piped"
    assert _record(root, "piped")["state"] == "done"


def test_a_job_file_that_is_not_utf8_is_refused_as_intake_quarantines_it(
        root: Path, env: dict[str, str], tmp_path: Path,
        processor: subprocess.Popen[bytes]) -> None:
    """A latin-1 export (Windows-1252 and ISO 8859-1 hosts write "café" as one byte E9):
    intake quarantines it "not UTF-8: invalid byte at offset 43", where ``spoolq submit
    --file`` said "malformed JSON: str is not valid UTF-8: surrogates not allowed: line 1
    column 1 (char 0)", naming neither the byte nor where it is (QA h401)."""
    data = b'{"tool": "echo", "params": {"message": "caf\xe9"}}'
    (root / "tmp" / "dropped").write_bytes(data)
    os.rename(root / "tmp" / "dropped", root / "pending" / "latin1.json")
    record = _record(root, "latin1")
    assert record["error"] == {"type": "invalid_job",
                               "message": "not UTF-8: invalid byte at offset 43"}, record

    job_file = tmp_path / "job.json"
    job_file.write_bytes(BOM + data)
    submitted = spoolq(env, "submit", "--file", str(job_file))
    assert submitted.returncode == 1
    assert submitted.stderr == (f"spoolq: error: {job_file} is not a valid job: not UTF-8: "
                                "invalid byte at offset 46\n")
    assert list((root / "pending").iterdir()) == []
    # The offset is the file's, as intake's of the same file is: past the byte order mark
    # it was 43, 3 short (h407).
    (root / "tmp" / "dropped").write_bytes(BOM + data)
    os.rename(root / "tmp" / "dropped", root / "pending" / "bomlatin1.json")
    record = _record(root, "bomlatin1")
    assert record["error"]["message"] == "not UTF-8: invalid byte at offset 46", record


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_job_file_in_utf16_is_refused_saying_so(
        root: Path, env: dict[str, str], tmp_path: Path,
        processor: subprocess.Popen[bytes], encoding: str) -> None:
    """Windows PowerShell's ``Out-File`` and ``>`` write UTF-16 (with a byte order mark:
    "utf-16"): quarantined "not UTF-8: invalid byte at offset 0", or, without one,
    "malformed JSON: unexpected character" for its NUL bytes, neither said what was
    wrong with a file that looks right in an editor (h401).  Both say UTF-16."""
    data = '{"tool": "echo", "params": {"message": "from windows"}}\r\n'.encode(encoding)
    job_id = encoding.replace("-", "")
    (root / "tmp" / "dropped").write_bytes(data)
    os.rename(root / "tmp" / "dropped", root / "pending" / f"{job_id}.json")
    record = _record(root, job_id)
    error = record["error"]
    assert isinstance(error, dict) and error["type"] == "invalid_job", record
    assert error["message"].endswith("; it looks like UTF-16, as Windows PowerShell's "
                                     "Out-File and > write: a job is UTF-8 JSON (Out-File "
                                     "-Encoding utf8)"), error

    job_file = tmp_path / "job.json"
    job_file.write_bytes(data)
    submitted = spoolq(env, "submit", "--file", str(job_file))
    assert submitted.returncode == 1
    assert "it looks like UTF-16" in submitted.stderr, submitted.stderr
    assert list((root / "pending").iterdir()) == []


def _reason(data: bytes) -> str:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return malformed_reason(data, exc)
    raise AssertionError(f"{data!r} parsed")


JOB = '{"tool": "echo", "params": {"message": "x"}}'


@pytest.mark.parametrize("data", [
    JOB.encode("utf-16"), JOB.encode("utf-16-le"), JOB.encode("utf-16-be"),
    ("\r\n  " + JOB).encode("utf-16-le"), ("\ufeff \n" + JOB).encode("utf-16-be"),
    ("[" + JOB + "]").encode("utf-16"),
], ids=["bom", "le", "be", "le-blanks-first", "be-bom-blanks", "array"])
def test_the_utf16_hint_is_said_of_utf16_text(data: bytes) -> None:
    assert _reason(data).endswith(UTF16_HINT), _reason(data)


@pytest.mark.parametrize("data", [
    JOB.encode("utf-32"), JOB.encode("utf-32-le"), JOB.encode("utf-32-be"),
    ("ÿþ" + JOB).encode("latin-1"), ("þÿ" + JOB).encode("latin-1"),
    b"{\x00 broken", b"\x00\x00\x00\x00", b"\xff\xfe",
], ids=["utf32-bom", "utf32-le", "utf32-be", "latin1-y-thorn", "latin1-thorn-y",
        "nul-in-utf8", "nuls", "bom-alone"])
def test_the_utf16_hint_is_not_said_of_other_encodings(data: bytes) -> None:
    """UTF-32's little-endian byte order mark begins as UTF-16's, and a latin-1 file may
    begin "ÿþ": the first bytes alone said UTF-16 of both (h407)."""
    reason = _reason(data)
    assert "UTF-16" not in reason, reason
    assert reason.startswith(("not UTF-8", "malformed JSON")), reason
