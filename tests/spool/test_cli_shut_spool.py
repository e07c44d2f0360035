"""A spool whose root this user may not enter (mode 0700, another owner).

``wait`` and ``submit --wait`` exit 2 there, as they do for state folders out of
reach (``check_can_follow``): exit 1 is "the job failed" to a script.  The other
commands exit 1 with one line naming the spool, and the Python client raises
:class:`~spool.errors.SpoolIOError` (the tree's EACCES), not a bare PermissionError.
Before: every command exited 1 with 'Permission denied (<spool>/pending)', and
``Client`` raised PermissionError.
"""

from __future__ import annotations

from pathlib import Path

from spoolkit import NOBODY, needs_root, spoolq
from test_cli import as_user, spoolq_as
from test_cli_permissions import refused

from spool.client import Client
from spool.errors import SpoolIOError
from spool.settings import load_settings

USER = 54321


def shut_spool(open_dir: Path, env: dict[str, str]) -> Path:
    root = open_dir / "spool"
    assert spoolq(env, "init", "--spool-dir", str(root)).returncode == 0
    root.chmod(0o700)  # root's own spool: no one else may enter it
    return root


@needs_root
def test_wait_on_a_spool_this_user_may_not_enter_is_a_usage_error(
        open_dir: Path, env: dict[str, str]) -> None:
    assert NOBODY is not None
    root = shut_spool(open_dir, env)
    base = ["--spool-dir", str(root)]
    for argv in (["wait", "j1"], ["wait", "j1", "--json"], ["submit", "echo", "--wait"],
                 ["submit", "echo", "--wait", "--json"]):
        proc = spoolq_as(USER, [NOBODY[1]], *base, *argv)
        refused(proc, 2, str(root), "may not enter")
    for argv in (["submit", "echo"], ["show", "j1"], ["ls"], ["stats"]):
        proc = spoolq_as(USER, [NOBODY[1]], *base, *argv)
        refused(proc, 1, str(root), "may not enter")
    assert list((root / "pending").iterdir()) == []


@needs_root
def test_the_client_raises_spool_io_error_on_a_spool_it_may_not_enter(
        open_dir: Path, env: dict[str, str]) -> None:
    assert NOBODY is not None
    root = shut_spool(open_dir, env)

    def body() -> int:
        try:
            Client.from_settings(load_settings(spool_dir=str(root)))
        except SpoolIOError as exc:
            return 0 if str(root) in str(exc) and "may not enter" in str(exc) else 3
        except PermissionError:
            return 4
        return 5

    code, stderr = as_user(USER, [NOBODY[1]], body)
    assert code == 0, (code, stderr)
