"""No module of the ``spool`` package is named like a spool folder.

With the editable install the README's test command makes, a process whose
working directory holds a spool folder named ``spool`` and which has that
directory on ``sys.path`` (``python -c``, ``python -m``) can resolve
``spool.<name>`` to the data folder ``<name>/`` of the spool instead of the
module: a module ``spool/cancel.py`` broke ``spoolq cancel`` that way in a
test (found while splitting spool/transitions.py). Folder names are the
layout's, so a new folder or a new module cannot collide unnoticed.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

import spool
from spool.layout import Layout


def test_no_spool_module_shares_a_spool_folder_name(tmp_path: Path) -> None:
    folders = {path.name for path in Layout(tmp_path).all_folders()}
    assert {"pending", "running", "done", "failed", "cancel"} <= folders  # the layout's
    modules = {info.name for info in pkgutil.iter_modules(spool.__path__)}
    assert "transitions" in modules  # the package was listed
    assert not modules & folders, f"spool modules named like spool folders: {modules & folders}"
