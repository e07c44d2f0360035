"""``spoolq`` commands that change the spool, and ``tools``, run by a user in one of the
spool's groups only, or in neither (docs/operations.md, "Permissions").

The users are made as in test_cli.py: a forked child takes another uid and groups, on a
spool made by ``spoolq init --system`` (the spool user ``nobody``, submit group
``nogroup``; the spool's own group 54322 stands in for ``spoolq``).  A refusal is one
line naming what the user may not do, exit 1 (these commands' "cannot be done"; with
``submit --wait`` exit 2, as wait's 1 means "failed"), and nothing changed on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from spoolkit import NOBODY, Proc, needs_root, spoolq
from test_cli import drop, finish, refused, spoolq_as

from spool.cli.main import main as spoolq_main
from spool.states import JobState

USER, SPOOL_GROUP, OTHER_GROUP = 54321, 54322, 54323


def system_spool(open_dir: Path, env: dict[str, str]) -> Path:
    """A system spool holding a done job d1, a failed f1 and a pending p1 (root's drop)."""
    root = open_dir / "spool"
    assert spoolq(env, "init", "--system", "--user", "nobody", "--group", "nogroup",
                  "--spool-dir", str(root)).returncode == 0
    for job_id in ("d1", "f1"):
        drop(root, job_id)
    finish(root, "d1", JobState.DONE, {"message": "hi"})
    finish(root, "f1", JobState.FAILED)
    drop(root, "p1")
    for name in ("running", "done", "failed", "progress", "cancel", "owners"):
        os.chown(root / name, -1, SPOOL_GROUP)
    for record in [*(root / "done").iterdir(), *(root / "failed").iterdir()]:
        os.chown(record, -1, SPOOL_GROUP)
    return root


def tree(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in root.iterdir()}


@needs_root
def test_cancel_retry_purge_submit_are_refused_in_one_line_before_changing_anything(
        open_dir: Path, env: dict[str, str]) -> None:
    """Before: a submitter's cancel of her own drop moved it from pending/ to tmp/ and then
    exited 1 on EACCES in failed/ (the job gone from the queue, with no record); the other
    refusals were 'Permission denied (path)', naming no missing access."""
    assert NOBODY is not None
    submit_group = NOBODY[1]
    root = system_spool(open_dir, env)
    base = ["--spool-dir", str(root), "--fsync", "always"]

    def run(group: int, *args: str) -> Proc:
        return spoolq_as(USER, [group], *base, *args)

    assert run(submit_group, "submit", "echo", "--id", "mine").returncode == 0
    before = tree(root)
    assert "mine.json" in before["pending"]
    own = run(submit_group, "cancel", "mine")  # she may move her drop, not write failed/
    assert tree(root) == before
    refused(own, 1, "spoolq cancel", "write to", "failed/", "which this user may not",
            "spool user")
    refused(run(submit_group, "retry", "f1"), 1, "spoolq retry", "failed/")
    refused(run(submit_group, "purge", "--older-than", "0s"), 1, "spoolq purge", "done/")
    for group in (SPOOL_GROUP, OTHER_GROUP):  # may read records, or nothing
        refused(run(group, "cancel", "p1"), 1, "spoolq cancel", "pending/", "tmp/",
                "failed/", "which this user may not")
        refused(run(group, "retry", "f1"), 1, "spoolq retry", "failed/", "tmp/", "pending/")
        refused(run(group, "purge", "--older-than", "0s"), 1, "spoolq purge", "done/",
                "failed/")
        refused(run(group, "submit", "echo", "--id", "theirs"), 1, "spoolq submit",
                "tmp/", "pending/", "submit group")
        refused(run(group, "submit", "echo", "--id", "theirs", "--wait"), 2, "spoolq submit")
    refused(run(OTHER_GROUP, "purge", "--older-than", "0s", "--dry-run"), 1,
            "spoolq purge --dry-run", "list done/, failed/")
    dry = run(SPOOL_GROUP, "purge", "--older-than", "0s", "--dry-run", "--json")
    assert dry.returncode == 0 and '"removed":2' in dry.stdout.replace(" ", ""), dry
    assert tree(root) == before


@needs_root
def test_init_json_of_a_system_spool_says_it_is_one_whoever_runs_it(
        open_dir: Path, env: dict[str, str]) -> None:
    """``"system"`` said whether ``--system`` was given: false of a system spool when its
    own user, or root without the option, ran ``init --json`` again (h386)."""
    assert NOBODY is not None
    root = system_spool(open_dir, env)
    base = ["--spool-dir", str(root), "init", "--json"]
    by_its_user = spoolq_as(NOBODY[0], [NOBODY[1]], *base)
    by_root = spoolq(env, *base)
    plain = spoolq(env, "--spool-dir", str(open_dir / "plain"), "init", "--json")
    for proc, system in ((by_its_user, True), (by_root, True), (plain, False)):
        assert proc.returncode == 0, proc
        assert orjson.loads(proc.stdout)["system"] is system, proc


@needs_root
def test_tools_by_a_user_who_may_not_list_owners_shows_the_installed_processors(
        open_dir: Path, env: dict[str, str]) -> None:
    """Before: a member of the submit group only (or of no group) got exit 1, 'Permission
    denied (owners)', and never reached the fallback to the installed processor.

    The child cannot run this interpreter (it lives under /root, mode 0700), so the
    installed processor is asked through a stand-in that prints what the real one printed
    for the parent (``python -m processor tools --json``), and checks how it was called."""
    assert NOBODY is not None
    root = system_spool(open_dir, env)
    catalogue = open_dir / "catalogue.json"
    catalogue.write_bytes(subprocess.run([sys.executable, "-m", "processor", "tools", "--json"],
                                         capture_output=True, check=True).stdout)
    stand_in = open_dir / "python"
    stand_in.write_text(f'#!/bin/sh\n[ "$*" = "-P -m processor tools --json" ] || exit 9\n'
                        f'exec cat {catalogue}\n')
    stand_in.chmod(0o755)
    catalogue.chmod(0o644)
    real = sys.executable
    sys.executable = str(stand_in)  # for the forked children only: put back below
    try:
        shut_out = [spoolq_as(USER, [group], "--spool-dir", str(root), "tools")
                    for group in (NOBODY[1], OTHER_GROUP)]
        reader = spoolq_as(USER, [SPOOL_GROUP], "--spool-dir", str(root), "tools")
    finally:
        sys.executable = real
    for proc in shut_out:
        assert proc.returncode == 0, proc.stderr
        assert "echo" in proc.stdout and "sleep" in proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "installed processor" in proc.stderr and "may not list owners/" in proc.stderr
    assert reader.returncode == 0 and "(none is running)" in reader.stderr, reader.stderr


def test_an_interpreter_that_cannot_start_is_named_with_what_spoolq_ran_it_for(
        root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """``tools`` (with no processor running) and ``data synth`` run this interpreter; one
    that cannot start (here: gone; above: under /root 0700 for the test user) said only
    'No such file or directory (/path/python)', not what spoolq was doing."""
    monkeypatch.setattr(sys, "executable", str(root / "gone" / "python"))
    for argv, words in ((["tools"], "'python -m processor tools' could not start"),
                        (["data", "synth", "--data-dir", str(root / "data")],
                         "data synth (python -m processor.quant.synth) could not start")):
        assert spoolq_main(["--spool-dir", str(root), *argv]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "gone/python" in lines[0], lines
