"""The installed spoolq's version: what ``--version`` of ``spoolq``, ``spool-processor``
and ``spool-statusd`` prints and the processor's status file reports.

Read from the distribution's metadata (pyproject's ``version``) when asked, not at
import: the CLI's other commands never pay for ``importlib.metadata``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

UNKNOWN = "unknown"
"""The version of a checkout run without ever being installed."""


def version() -> str:
    import importlib.metadata  # noqa: PLC0415 - see the module's docstring

    try:
        return importlib.metadata.version("spoolq")
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


class VersionAction(argparse.Action):
    """``--version``: print ``<prog> <version>`` on stdout and exit 0 (argparse's own
    action wants the text when the parser is built)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None,
                 ) -> NoReturn:
        print(f"{parser.prog} {version()}", file=sys.stdout, flush=True)
        parser.exit(0)


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=VersionAction)
