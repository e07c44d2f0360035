"""Settings: a bad value is one ConfigError naming the variable, never a later crash."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from spool.errors import ConfigError
from spool.settings import load_settings
from spool.stdio import integer


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SPOOL_LOG_LEVEL", "bogus", "SPOOL_LOG_LEVEL"),
    ("SPOOL_GRACE_S", "inf", "SPOOL_GRACE_S"),
    ("SPOOL_SCAN_S", "nan", "SPOOL_SCAN_S"),
    ("SPOOL_SETTLE_S", "1e9", "SPOOL_SETTLE_S"),
    ("JOB_NUM", "0", "JOB_NUM"),
    # Went to the resolver at the bind: "Name or service not known" alone, exit 1.
    ("STATUSD_HOST", "localhost:8000", "STATUSD_HOST: 'localhost:8000' is no IP address"),
    ("STATUSD_HOST", "[::1]", "STATUSD_HOST"),
    # No worker can start under it: the job waited in running/ for its timeout.
    ("SPOOL_WORKER_MEMORY_MB", "10", "SPOOL_WORKER_MEMORY_MB: .*at least 384, or 0"),
    # Past what RLIMIT_AS takes: each worker died in setrlimit at start, forked again at
    # once, and every COMPUTE job failed worker_crashed (QA).
    ("SPOOL_WORKER_MEMORY_MB", str(1 << 43), "SPOOL_WORKER_MEMORY_MB"),
    # Every write answered 401: an HTTP header's value loses its blanks (QA).
    ("STATUSD_TOKEN", " ", "STATUSD_TOKEN: is only blanks"),
    ("STATUSD_TOKEN", "s3cret ", "STATUSD_TOKEN: has blanks at its start or end"),
    # Said "this user has no home directory (HOME is unset ...)" with HOME set (QA).
    ("SPOOL_DIR", "~no-such-user-x/spool", "there is no user 'no-such-user-x'"),
    ("SPOOL_DATA_DIR", "~no-such-user-x/data", "there is no user 'no-such-user-x'"),
    # Python's int() and float() read these as 40, 10 and 8000: a typo ran 40 workers.
    ("JOB_NUM", "4_0", "JOB_NUM: has '_' in its number"),
    ("SPOOL_SCAN_S", "1_0", "SPOOL_SCAN_S: has '_'"),
    ("STATUSD_PORT", "80_00", "STATUSD_PORT: has '_'"),
])
def test_a_bad_value_is_one_config_error(monkeypatch: pytest.MonkeyPatch, variable: str,
                                         value: str, says: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=says):
        load_settings()


def test_a_worker_memory_cap_of_0_or_room_for_a_worker_is_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "384", "700", str((1 << 43) - 1)):
        monkeypatch.setenv("SPOOL_WORKER_MEMORY_MB", value)
        assert load_settings().worker_memory_mb == int(value)


def test_an_address_or_a_host_name_is_taken_for_statusd(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    for host in ("127.0.0.1", "::1", "0.0.0.0", "::", "localhost", "spoolq.example.com",
                 "statusd_1"):
        monkeypatch.setenv("STATUSD_HOST", host)
        assert load_settings().statusd_host == host


def test_log_level_is_case_blind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOL_LOG_LEVEL", " debug ")
    assert load_settings().log_level == "DEBUG"


@pytest.mark.parametrize("text", ["4_0", " 4", "4\n", "\uff14", "4.0", "", "0x4"])
def test_a_whole_number_argument_is_ascii_digits_alone(text: str) -> None:
    """``--job-num 4_0`` ran forty workers (argparse's ``type=int``), ``--priority 1_0``
    was 10, ``--port`` took fullwidth digits (QA)."""
    with pytest.raises(argparse.ArgumentTypeError, match="not a whole number"):
        integer(text)
    assert (integer("4"), integer("-4"), integer("+4"), integer("0040")) == (4, -4, 4, 40)


@pytest.mark.parametrize("argv", [["-m", "processor", "--job-num", "4_0"],
                                  ["-m", "statusd", "--port", "80_00"],
                                  ["-c", "from spool.cli.main import main; main()",
                                   "submit", "echo", "--priority", "1_0"]])
def test_each_command_refuses_digit_groups(argv: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, *argv, "--spool-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (2, ""), proc
    assert "not a whole number: '" in proc.stderr and "Traceback" not in proc.stderr, proc
