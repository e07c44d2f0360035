"""``spool-processor`` whose spool is swapped for a copy of itself at the start of a
periodic pass, once the file ``SWAP_SPOOL_WHEN`` exists: after the loop's check of the
spool (``lifecycle.lease_stands``) and before the pass locks anything, the window a
remount under load fell into (tests/processor/test_spool_fuse.py, ``unmounted``).  The
copy's files are new ones, unlocked, as a new mount's are: the processor's own running
files and owner lock among them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

if __name__ == "__main__":
    from processor.__main__ import main
    from processor.periodic_scan import PeriodicScan

    real_run = PeriodicScan.run

    def run(self: PeriodicScan) -> None:
        trigger = Path(os.environ["SWAP_SPOOL_WHEN"])
        if trigger.exists():
            trigger.unlink()
            root = self.layout.root
            os.rename(root, f"{root}.old")
            shutil.copytree(f"{root}.old", root, symlinks=True)
            print("spool swapped", file=sys.stderr, flush=True)
        real_run(self)

    PeriodicScan.run = run  # type: ignore[method-assign]
    sys.exit(main())
