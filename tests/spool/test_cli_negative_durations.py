"""A negative duration is refused in one line that says so, however it is typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from spool.cli.main import main


@pytest.mark.parametrize("argv", [
    ["purge", "--older-than", "-1d"],  # was argparse's "expected one argument"
    ["purge", "--older-than=-1d"],
    ["purge", "--older-than", "-2.5h"],
    ["wait", "some-id", "--timeout", "-5"],
])
def test_a_negative_duration_is_a_one_line_usage_error(argv: list[str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--spool-dir", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spoolq: error: ")
    assert "cannot be negative" in err and argv[-1].split("=")[-1] in err
