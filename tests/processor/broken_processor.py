"""``python -m broken_processor``: the real processor with one step made to fail.

``BROKEN_STEP`` in the environment names it: ``rescan`` makes start-up's first
rescan (``pending/`` and ``cancel/``) raise ``PermissionError``, as a folder whose
mode changed under start-up would, after the COMPUTE pool has started.  Then
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
    else:
        raise SystemExit(f"{STEP_ENV}={step!r}: use rescan")


def main() -> int:
    _break(os.environ[STEP_ENV])
    return processor_main.main()


if __name__ == "__main__":
    sys.exit(main())
