"""A change feed over spool folders, for both daemons.

watchdog (inotify on Linux) reports names that appeared, changed, moved or
vanished.  Events are hints, never the truth: they can be lost (queue
overflow, network filesystems), so every user also rescans periodically and
re-reads the folder before acting on an event.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

OnChange = Callable[[str, str], None]
"""Called from the watchdog thread with (folder name, file name)."""

_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})
# Only what changes a folder's listing or ends a write.  Opens, reads and
# attribute changes would each wake a Python thread that then competes for
# the GIL with the daemon's own file operations.
_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: OnChange) -> None:
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _EVENTS:
            return
        self._report(event.src_path)
        if event.event_type == "moved" and event.dest_path:
            self._report(event.dest_path)

    def _report(self, raw: bytes | str) -> None:
        path = os.fsdecode(raw)
        folder, name = os.path.split(path)
        if name:
            self.on_change(os.path.basename(folder), name)


class ChangeFeed:
    """Watch ``folders`` (not recursively) and report each change to ``on_change``."""

    def __init__(self, folders: Iterable[Path], on_change: OnChange) -> None:
        self.folders = list(folders)
        self._observer = Observer()
        handler = _Handler(on_change)
        for folder in self.folders:
            self._observer.schedule(handler, str(folder), recursive=False, event_filter=_FILTER)

    def start(self) -> None:
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)

    def __enter__(self) -> ChangeFeed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
