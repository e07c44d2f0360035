"""Helpers the quant tool tests share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Context:
    """What the processor hands a tool: progress sink (recording every report), data
    dir, resource cache."""

    def __init__(self, data_dir: Path) -> None:
        self.job_id = "job-1"
        self.data_dir = data_dir
        self.updates: list[tuple[float, str]] = []
        self.resources: dict[str, Any] = {}

    def progress(self, fraction: float, message: str = "") -> None:
        self.updates.append((fraction, message))

    def resource(self, key: str, factory: Callable[[], T]) -> T:
        if key not in self.resources:
            self.resources[key] = factory()
        value: T = self.resources[key]
        return value
