"""The wheel holds what an install needs, where docs/operations.md says it is.

A wheel of spoolq is built once (``pip wheel``, isolated, as a user's ``pip install
/path/to/spoolq`` builds it: about 10 s) from a copy of this tree.  Its systemd units
and settings example go to the venv's ``share/spoolq/systemd/``: before, the wheel had
none of them, and the guide's ``systemd/...`` paths named a checkout's folder that a
pip user does not have (QA h405).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import unitkit

SHARE = "share/spoolq/systemd/"
GUIDES = ("docs/operations.md", "docs/scaling.md")
TREE = ("pyproject.toml", "README.md", "spool", "processor", "statusd", "systemd")


class Wheel:
    """What the test reads of the built wheel: its names, METADATA, the build's log."""

    def __init__(self, path: Path, log: str) -> None:
        with zipfile.ZipFile(path) as whl:
            self.names = set(whl.namelist())
            (meta,) = (n for n in self.names if n.endswith(".dist-info/METADATA"))
            self.metadata = whl.read(meta).decode()
        self.log = log


@pytest.fixture(scope="module")
def whl(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in TREE:
        path = unitkit.REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w",
                           str(out), str(src)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("spoolq-*.whl")
    return Wheel(built, proc.stdout + proc.stderr)


def data_files(whl: Wheel) -> set[str]:
    """The wheel's files for the venv's prefix, as paths under it."""
    found = set()
    for name in whl.names:
        head, sep, rest = name.partition(".data/data/")
        if sep and "/" not in head:
            found.add(rest)
    return found


def test_every_unit_file_is_installed_under_share(whl: Wheel) -> None:
    shipped = {SHARE + str(p.relative_to(unitkit.UNITS))
               for p in unitkit.UNITS.rglob("*") if p.is_file()}
    assert shipped, "no systemd/ in this tree"
    assert shipped <= data_files(whl), sorted(shipped - data_files(whl))


@pytest.mark.parametrize("guide", GUIDES)
def test_the_guides_install_paths_are_in_the_wheel(
        whl: Wheel, guide: str) -> None:
    text = (unitkit.REPO / guide).read_text()
    named = set(re.findall(r"/opt/spoolq/(share/spoolq/systemd/[\w.\-/]*\w)", text))
    missing = sorted(n for n in named if n not in data_files(whl))
    assert not missing, missing
    # A command that copies or installs from the checkout's systemd/ would fail for a
    # wheel's user: none is left.
    relative = re.findall(r"^sudo (?:cp|install) .*?(?<![\w/])systemd/\S+", text, re.M)
    assert not relative, relative


def test_runtime_data_is_in_and_the_tree_around_it_is_not(
        whl: Wheel) -> None:
    names = whl.names
    static = {f"statusd/static/{p.name}"
              for p in (unitkit.REPO / "statusd" / "static").iterdir() if p.is_file()}
    assert static and static <= names, sorted(static - names)
    assert {"spool/py.typed", "processor/py.typed", "statusd/py.typed"} <= names
    assert "processor/quant/synth.py" in names  # spoolq data synth, spoolq demo
    tops = {n.split("/")[0] for n in names if ".data/" not in n and ".dist-info/" not in n}
    assert tops == {"spool", "processor", "statusd"}, tops


def test_metadata_and_build_say_nothing_deprecated(whl: Wheel) -> None:
    """setuptools warned that ``license = { text = ... }`` stops building by 2027-Feb-18."""
    headers = whl.metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers, headers
    assert "deprecated" not in whl.log.lower(), [
        line for line in whl.log.splitlines() if "deprecated" in line.lower()]
