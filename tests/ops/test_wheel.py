"""The wheel holds what an install needs, where docs/operations.md says it is.

A wheel of spoolq is built once (``pip wheel``, isolated, as a user's ``pip install
/path/to/spoolq`` builds it: about 10 s) from a copy of this tree.  Its systemd units
and settings example go to the venv's ``share/spoolq/systemd/``: before, the wheel had
none of them, and the guide's ``systemd/...`` paths named a checkout's folder that a
pip user does not have (QA h405).
"""

from __future__ import annotations

import os
import re
import shlex
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
        self.path = path
        with zipfile.ZipFile(path) as whl:
            self.names = set(whl.namelist())
            (meta,) = (n for n in self.names if n.endswith(".dist-info/METADATA"))
            self.metadata = whl.read(meta).decode()
        self.log = log


def copy_tree(src: Path) -> Path:
    """What a build of this tree reads, copied to ``src`` (a build writes into its tree)."""
    for name in TREE:
        path = unitkit.REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    return src


def build(src: Path, out: Path) -> Wheel:
    """A wheel of ``src``, built as ``pip install DIR`` builds it."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w",
                           str(out), str(src)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("spoolq-*.whl")
    return Wheel(built, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def whl(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    return build(copy_tree(tmp_path_factory.mktemp("src")), tmp_path_factory.mktemp("dist"))


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


def upgrade_commands(guide: Path) -> list[list[str]]:
    """The ``pip`` lines of the guide's Upgrade block, as argument lists."""
    section = guide.read_text().split("\n## Upgrade\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0].removeprefix("sudo "))
            for line in block.splitlines() if "/bin/pip " in line]


def test_the_guides_upgrade_installs_a_new_build_of_the_same_version(
        whl: Wheel, tmp_path: Path) -> None:
    """Every build between two releases says 0.1.0, and ``pip install --upgrade`` of such a
    wheel did nothing (exit 0): the guide's Upgrade left the old code in place (QA h405).
    The guide's pip lines run as written on a venv of this wheel, with ``--no-deps
    --no-index`` added (the dependencies are not the point, and need the registry)."""
    src = tmp_path / "src"
    src.mkdir()
    copy_tree(src)
    marker = "# a newer build (h405)\n"
    with (src / "spool" / "__init__.py").open("a") as fh:
        fh.write(marker)
    newer = build(src, tmp_path / "dist")
    venv = tmp_path / "venv"
    # Not the conftest's PYTHONPATH: pip would take this checkout's spoolq.egg-info, if
    # any, for an installed spoolq.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    offline = ["--no-deps", "--no-index"]
    subprocess.run([*pip, "install", *offline, str(whl.path)], check=True, env=env)
    (init,) = venv.glob("lib/python*/site-packages/spool/__init__.py")
    assert not init.read_text().endswith(marker)
    commands = upgrade_commands(unitkit.REPO / "docs" / "operations.md")
    assert commands, "no pip line in the guide's Upgrade"
    for argv in commands:
        assert argv[:2] == ["/opt/spoolq/bin/pip", "install"], argv
        args = [str(newer.path) if a == "/path/to/new/spoolq" else a for a in argv[2:]]
        subprocess.run([*pip, "install", *offline, *args], check=True, env=env)
    assert init.read_text().endswith(marker), "the old build is still installed"
