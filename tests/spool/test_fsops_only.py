"""One module moves files: no code in spool/, processor/ or statusd/ except
``spool/fsops.py`` calls rename, link, unlink, remove or fsync (STYLE habit 1).

The scan reads the syntax tree, so comments and strings do not count, and
reports every offender as ``file:line: call``.  ``Path.replace``/``.rename``
are told from ``str.replace``/``DataFrame.rename(columns=...)`` by their shape:
one positional argument and no keywords; calls on an object named ``mover``
(``self.mover.unlink(...)``) are the Mover's API and allowed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("spool", "processor", "statusd")
OWNER = "spool/fsops.py"

MODULE_CALLS = {
    "os": {"rename", "renames", "replace", "link", "unlink", "remove", "removedirs", "rmdir",
           "fsync", "fdatasync", "sync"},
    "shutil": {"rmtree", "move"},
}
# Path methods that move or remove: always flagged
PATH_METHODS = {"unlink", "hardlink_to", "link_to", "rmdir"}
# Path methods whose names other types share: flagged in the Path shape only
PATH_METHODS_ONE_ARG = {"rename", "replace"}

# Files that may move files of their own, and which calls they may make (with why).
ALLOWLIST: dict[str, dict[str, str]] = {
    # Writes the synthetic OHLCV data files (not spool files) via a temporary
    # name and os.replace, so a reader never sees half a CSV.
    "processor/quant/synth.py": {"os.replace": "data files, not spool files",
                                 "os.unlink": "its own staging file, when a write fails"},
    # Root's private view of another user's spool: a folder of links, removed at exit.
    "spool/view.py": {"os.unlink": "its view's own links", "os.rmdir": "its view's folder"},
}


@dataclass(frozen=True, order=True)
class Offence:
    path: str
    line: int
    call: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.call}"


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[Offence] = []
        self.modules: dict[str, str] = {}  # local alias -> "os" / "shutil"
        self.functions: dict[str, str] = {}  # local name -> "os.rename", ...

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in MODULE_CALLS:
                self.modules[alias.asname or alias.name] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module in MODULE_CALLS:
            for alias in node.names:
                if alias.name in MODULE_CALLS[node.module]:
                    dotted = f"{node.module}.{alias.name}"
                    self.functions[alias.asname or alias.name] = dotted
                    self._flag(node, f"from {node.module} import {alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        call = self._classify(node)
        if call is not None:
            self._flag(node, call)
        self.generic_visit(node)

    def _classify(self, node: ast.Call) -> str | None:
        func = node.func
        if isinstance(func, ast.Name):
            return self.functions.get(func.id)
        if not isinstance(func, ast.Attribute):
            return None
        owner = _dotted(func.value)
        module = self.modules.get(owner or "")
        if module is not None:
            return f"{module}.{func.attr}" if func.attr in MODULE_CALLS[module] else None
        return _path_method(node, func, owner)

    def _flag(self, node: ast.stmt | ast.expr, call: str) -> None:
        self.found.append(Offence(self.path, node.lineno, call))


def _path_method(node: ast.Call, func: ast.Attribute, owner: str | None) -> str | None:
    if owner in ("os.path", "dataclasses", "datetime"):
        return None
    if owner is not None and owner.rsplit(".", 1)[-1].lower().endswith("mover"):
        return None  # Mover.unlink and friends: the owner's own API
    one_arg = len(node.args) == 1 and not node.keywords
    if func.attr in PATH_METHODS or (func.attr in PATH_METHODS_ONE_ARG and one_arg):
        return f"Path.{func.attr}"
    return None


def offences_in(source: str, path: str) -> list[Offence]:
    finder = _Finder(path)
    finder.visit(ast.parse(source, filename=path))
    return sorted(finder.found)


def scan(repo: Path = REPO) -> list[Offence]:
    found: list[Offence] = []
    for package in SCANNED:
        for file in sorted((repo / package).rglob("*.py")):
            rel = file.relative_to(repo).as_posix()
            if rel == OWNER:
                continue
            allowed = ALLOWLIST.get(rel, {})
            found += [o for o in offences_in(file.read_text(encoding="utf-8"), rel)
                      if o.call not in allowed]
    return found


def test_only_fsops_moves_files() -> None:
    offences = scan()
    assert not offences, "calls that belong in spool/fsops.py (Mover):\n" + "\n".join(
        map(str, offences))


def test_allowlist_entries_still_needed() -> None:
    """An allowlist entry nobody uses any more is removed, not left to rot."""
    for rel, calls in ALLOWLIST.items():
        path = REPO / rel
        if not path.exists():
            pytest.fail(f"allowlisted {rel} no longer exists")
        used = {o.call for o in offences_in(path.read_text(encoding="utf-8"), rel)}
        assert set(calls) <= used, f"{rel}: allowlisted but unused: {set(calls) - used}"


def test_the_owner_is_seen_to_move_files() -> None:
    """The scanner finds the real thing: fsops.py is full of what it looks for."""
    calls = {o.call for o in offences_in((REPO / OWNER).read_text(encoding="utf-8"), OWNER)}
    assert {"os.rename", "os.link", "os.unlink", "os.fsync", "os.rmdir"} <= calls


SAMPLE = '''
import os, shutil as sh
from os import unlink as rm
from pathlib import Path
# os.rename(a, b) in a comment does not count
text = "os.remove(x) in a string does not count"
name = "a-b".replace("-", "_")
frame = frame.rename(columns={"a": "b"})
record = dataclasses.replace(record, x=1)
os.path.join("a", "b")
os.rename(a, b)
sh.rmtree(folder)
rm(path)
Path("x").unlink(missing_ok=True)
p.replace(q)
p.hardlink_to(q)
os.fdatasync(fd)
self.spool.mover.unlink(path)
'''


def test_scanner_on_a_sample() -> None:
    found = [(o.line, o.call) for o in offences_in(SAMPLE, "sample.py")]
    assert found == [
        (3, "from os import unlink"), (11, "os.rename"), (12, "shutil.rmtree"),
        (13, "os.unlink"), (14, "Path.unlink"), (15, "Path.replace"),
        (16, "Path.hardlink_to"), (17, "os.fdatasync"),
    ]
