"""The user and group commands of README.md and docs/operations.md, run for real.

Each documented ``groupadd`` / ``useradd`` / ``usermod`` line runs as written,
with ``--root`` added so it changes a copy of ``/etc`` under ``tmp_path`` and
never this machine's accounts.  Afterwards the units' ``User=spoolq`` and
``Group=spoolq`` must resolve, and the user must be in ``spoolq-submit``
(which ``spoolq init --system`` checks).  ``USERGROUPS_ENAB`` in
``login.defs`` decides whether ``useradd`` makes a group of the user's name
unasked: Debian says yes, other distributions (and admins) no, so both.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import unitkit

ACCOUNT_COMMANDS = ("groupadd", "useradd", "usermod")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd (shadow)"),
]


def documented_commands(doc: Path) -> list[str]:
    """The account commands of ``doc``'s shell blocks, continuations joined."""
    text = doc.read_text().replace("\\\n", " ")
    commands = []
    for block in re.findall(r"```(?:sh|console)\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            words = line.strip().removeprefix("# ").removeprefix("sudo ").split()
            if words and words[0] in ACCOUNT_COMMANDS:
                commands.append(" ".join(words))
    return commands


def fake_etc(root: Path, usergroups: str) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nusers:x:100:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nusers:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)
    (etc / "login.defs").write_text(
        f"USERGROUPS_ENAB {usergroups}\nSYS_UID_MIN 100\nSYS_UID_MAX 999\n"
        "SYS_GID_MIN 100\nSYS_GID_MAX 999\nUID_MIN 1000\nGID_MIN 1000\n")


def entries(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md"])
@pytest.mark.parametrize("usergroups", ["yes", "no"])
def test_the_documented_accounts_give_the_units_their_user_and_group(
        tmp_path: Path, doc: str, usergroups: str) -> None:
    commands = documented_commands(unitkit.REPO / doc)
    assert any(c.startswith("useradd") for c in commands), commands
    fake_etc(tmp_path, usergroups)
    for command in commands:
        words = shlex.split(command)
        argv = [words[0], "--root", str(tmp_path), *words[1:]]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (command, proc.stderr)
    users, groups = entries(tmp_path / "etc/passwd"), entries(tmp_path / "etc/group")
    processor = unitkit.load("spool-processor.service")
    user, group = processor.get("User"), processor.get("Group")
    assert user in users and group in groups, (doc, sorted(groups))
    assert users[user][3] == groups[group][2], "the user's primary group is Group="
    assert users[user][5] == unitkit.SPOOL
    assert user in groups["spoolq-submit"][3].split(","), groups["spoolq-submit"]
