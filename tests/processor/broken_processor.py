"""``python -m broken_processor``: the real processor with one step made to fail.

``BROKEN_STEP`` in the environment names it: ``rescan`` makes start-up's first
rescan (``pending/`` and ``cancel/``) raise ``PermissionError``, as a folder whose
mode changed under start-up would, after the COMPUTE pool has started;
``second_worker`` makes the local pool's start fail with EMFILE at its second
worker, the first one up (as a descriptor limit a few above start-up's needs does,
now and then: ``prlimit --nofile=52`` with ``JOB_NUM=4``).  Then
``processor.__main__.main`` runs as ``python -m processor`` would.

Not a test module; the tests start it through daemonkit's runner (``module=``; this
folder is on the daemon's ``PYTHONPATH``).
"""

from __future__ import annotations

import errno
import os
import sys

from processor import __main__ as processor_main

STEP_ENV = "BROKEN_STEP"


def _break(step: str) -> None:
    # Imported here only: importing it first would delay the forkserver's start.
    from processor.discovery import Discovery  # noqa: PLC0415

    if step == "rescan":
        def rescan(self: Discovery) -> None:
            raise PermissionError(errno.EACCES, "Permission denied",
                                  os.fspath(self.layout.cancel))

        Discovery.rescan = rescan  # type: ignore[method-assign]
    elif step == "second_worker":
        _break_second_spawn()
    else:
        raise SystemExit(f"{STEP_ENV}={step!r}: use rescan or second_worker")


def _break_second_spawn() -> None:
    from processor.pool import LocalPool  # noqa: PLC0415 - as Discovery above

    spawn = LocalPool._spawn
    spawned = []

    def second_fails(self: LocalPool, slot: object) -> None:
        if spawned:
            raise OSError(errno.EMFILE, "Too many open files")
        spawned.append(slot)
        spawn(self, slot)  # type: ignore[arg-type]

    LocalPool._spawn = second_fails  # type: ignore[method-assign]


def main() -> int:
    _break(os.environ[STEP_ENV])
    return processor_main.main()


if __name__ == "__main__":
    sys.exit(main())
