"""A reader of ``bench/chaos.py``: what any client may see, checked while the soak runs.

:class:`SpoolReader` samples the spool every :data:`READ_EVERY_S` on a thread of its
own, as ``spoolq show`` or statusd would: it lists ``pending/``, ``done/`` and
``failed/`` and reads up to :data:`SAMPLE` of the ``.json`` files of each.  Every
writer publishes complete files by rename (DESIGN section 2), so a file read whole
must be a JSON object; in ``done/`` and ``failed/`` its ``id`` must be the file's
stem and its ``state`` the folder's name.  A file gone between the listing and the
read is no fault (it moved on).  What breaks the rule is counted (``torn``) with a
few examples; :attr:`SpoolReader.reads` counts the files read.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import orjson

READ_EVERY_S = 0.02
SAMPLE = 8
FOLDERS = ("pending", "done", "failed")


class SpoolReader:
    """Samples and checks the spool's job files and records until :meth:`stop`."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.reads = 0
        self.torn: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-reader", daemon=True)

    def start(self) -> SpoolReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(READ_EVERY_S):
            for folder in FOLDERS:
                names = [n for n in os.listdir(self.root / folder) if n.endswith(".json")]
                for name in self.rng.sample(names, min(SAMPLE, len(names))):
                    self.check(folder, name)

    def check(self, folder: str, name: str) -> None:
        """Read ``folder/name`` once and note what breaks the rule."""
        try:
            data = (self.root / folder / name).read_bytes()
        except FileNotFoundError:
            return
        self.reads += 1
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.torn.append(f"{folder}/{name}: {len(data)} bytes, not JSON")
            return
        if not isinstance(body, dict):
            self.torn.append(f"{folder}/{name}: not an object")
        elif folder != "pending" and (body.get("id"), body.get("state")) != (name[:-5], folder):
            self.torn.append(f"{folder}/{name}: says id {body.get('id')!r}, "
                             f"state {body.get('state')!r}")
